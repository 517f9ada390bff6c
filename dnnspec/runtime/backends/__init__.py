"""One module per backend, each defining `BACKEND`; `runtime/backend.py` registers them."""
