"""IVR flows as TOML data: loader, validator, sans-IO interpreter, graph export."""
