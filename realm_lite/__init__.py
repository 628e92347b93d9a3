"""realm-lite: a small, readable, trainable reproduction of REALM (Guu et al. 2020).

`realm_lite.load_pretrained(name or path)` loads a trained REALM ("world-cpu" ships with the package) and
`realm_lite.load_qa(name or path, system)` one of its QA systems (realm_lite.export); they are imported on first
use, so that `import realm_lite` (and the command line's --help) loads neither torch nor transformers.
"""

__all__ = ["load_pretrained", "load_qa"]


def __getattr__(name: str):
    """realm_lite.load_pretrained and realm_lite.load_qa, imported from realm_lite.export when first asked for."""
    if name in __all__:
        from realm_lite import export

        return getattr(export, name)
    raise AttributeError(f"module 'realm_lite' has no attribute {name!r}")
