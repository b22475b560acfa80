"""What an EmbeddingProxy is: names, the spec with its defaults and rules, images, quantities and
the operator's own settings. Pure."""
