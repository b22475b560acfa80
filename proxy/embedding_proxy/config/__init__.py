"""Settings: the pydantic model, its flags, the lanes and keys it names, reload, redaction."""
