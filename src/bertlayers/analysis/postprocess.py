"""Post-processing of sentence vectors before the cosine: centring, whitening (Su et al. 2021;
whitening-K keeps the top K directions) and all-but-the-top (Mu & Viswanath 2018), each fitted
on a set of texts and applied to any rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, OptionError
from ..options import StrEnum


class TooFewTexts(InputError):
    """A post-processing that the texts it is fitted on cannot define (whitening, N <= D)."""


class Post(StrEnum):
    """Post-processing of the vectors before the cosine."""

    NONE = "none"
    CENTER = "center"  # subtract the mean vector
    WHITEN = "whiten"  # centre, then rotate and scale to identity covariance (Su et al. 2021)
    ABTT = "abtt"  # centre, then remove the top d/100 principal directions (Mu & Viswanath 2018)


@dataclass(frozen=True)
class PostSpec:
    """A post-processing as asked for: `whiten-64` is whitening kept to its top 64 directions
    (Su et al.'s whitening-k)."""

    post: Post
    dims: int | None = None

    @property
    def label(self) -> str:
        return f"{self.post.value}-{self.dims}" if self.dims else self.post.value


def parse_posts(spec: str) -> list[PostSpec]:
    """`none,whiten,whiten-64` -> their specs (order kept, duplicates dropped)."""
    posts: list[PostSpec] = []
    for part in spec.split(","):
        name, dash, dims = part.strip().partition("-")
        post = Post.parse(name, "post-processing")
        if dash and (post is not Post.WHITEN or not dims.isdigit() or int(dims) < 1):
            raise OptionError(
                f"unknown post-processing '{part.strip()}': use none, center, whiten, "
                "whiten-K (the top K directions) or abtt"
            )
        parsed = PostSpec(post, int(dims) if dims else None)
        if parsed not in posts:
            posts.append(parsed)
    return posts


def fit_post(
    post: Post, vectors: np.ndarray, whiten_dims: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit a post-processing on `vectors` `(N, D)` and return the map it applies to any rows.

    `whiten_dims` keeps only the top k whitened directions (Su et al.'s whitening-k), which
    drops the low-variance directions that full whitening scales up to equal weight."""
    post = Post.parse(post, "post-processing")
    if post is Post.NONE:
        return lambda x: np.asarray(x, dtype=np.float32)
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        raise InputError(f"{post.value} needs at least two texts to fit on, got {len(x)}")
    mean = x.mean(axis=0)
    if post is Post.CENTER:
        return lambda rows: (np.asarray(rows, np.float64) - mean).astype(np.float32)
    centred = x - mean
    if post is Post.WHITEN:
        # W = U diag(1/sqrt(s)) from the SVD of the covariance, as Su et al.'s code. N points
        # whitened in N-1 or more dimensions form a regular simplex (every cosine -1/(N-1)),
        # so full whitening needs more texts than dimensions, and whitening-K fewer directions
        # than texts; directions the fit data does not span (s ~ 0) are dropped, not inflated.
        wanted = whiten_dims or x.shape[1]
        if wanted >= len(x) - 1:
            name = f"whiten-{whiten_dims}" if whiten_dims else "whiten"
            raise TooFewTexts(
                f"{name} fitted on {len(x)} texts of {x.shape[1]} dimensions is undefined (it "
                f"needs more texts than the {wanted} directions it keeps): use whiten-K with K "
                f"< {len(x) - 1}, or {{opt:fit_on}} more texts"
            )
        covariance = centred.T @ centred / len(x)
        u, s, _ = np.linalg.svd(covariance)
        kept = min(wanted, int((s > max(float(s.max()) * 1e-6, 1e-12)).sum()))
        whiten = u[:, :kept] / np.sqrt(s[:kept])
        return lambda rows: ((np.asarray(rows, np.float64) - mean) @ whiten).astype(np.float32)
    n_top = max(1, round(x.shape[1] / 100))  # Mu & Viswanath's D = d/100
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    top = vt[:n_top]  # (D, d)

    def all_but_the_top(rows: np.ndarray) -> np.ndarray:
        c = np.asarray(rows, np.float64) - mean
        return (c - (c @ top.T) @ top).astype(np.float32)

    return all_but_the_top


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), so inner product = cosine."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)
