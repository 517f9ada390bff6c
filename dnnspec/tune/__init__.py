"""`dnnspec tune`: run a spec's search section as trials, each a normal training run."""
