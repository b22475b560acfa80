"""Pure decisions from the model: the plan, rendering, patches, conditions, the autoscaler's
arithmetic, reading pods and metrics pages, certificates."""
