"""realm-lite: a small, readable, trainable reproduction of REALM (Guu et al. 2020).

`realm_lite.load_pretrained(path)` loads an export directory (realm_lite.export); it is imported on first use,
so that `import realm_lite` (and the command line's --help) loads neither torch nor transformers.
"""

__all__ = ["load_pretrained"]


def __getattr__(name: str):
    """realm_lite.load_pretrained, imported from realm_lite.export when first asked for."""
    if name == "load_pretrained":
        from realm_lite.export import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'realm_lite' has no attribute {name!r}")
