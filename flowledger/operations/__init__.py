"""The operations the CLI and the HTTP API share: each request that changes something
(a run started, cancelled, rerun; a task completed) goes through one function here,
and through the operator audit, whoever asked for it."""
