"""Workflow definitions (ARCHITECTURE §6): the document model (`model`), publish-time
validation with step paths (`validate`, with `checks` and the per-step-type `rules`),
the canonical hash (`canonical`), and the published-definitions store (`store`).

Nothing is imported here: validation reaches the step-type registry, which reaches
the step handlers, which use the models; importing a model must not start that walk."""
