"""Putting layers to work: metrics, per-layer probes, matching (similarity and retrieval),
geometry, plots and the HTML report.

Analysis reads arrays and stores, never model code: nothing here imports the core, the
backends or torch. Needs the `analysis` extra (scikit-learn, matplotlib, joblib, bm25s)."""
