"""The interpreter's semantics version, recorded in every run's RunStarted event.

Bump SEMANTICS_VERSION with any change of what a definition does when it runs: how
a step behaves, which events a wait may take, what an expression gives, which errors
are raised and caught. A run keeps the version it started with across continue-as-new
(it travels in the carry), so a later change can be gated on the run's own version
(together with Temporal's patching for executions already in flight) instead of
altering runs that started under the old rules. Refactorings that change no
behaviour leave it alone."""

from __future__ import annotations

from typing import Final

SEMANTICS_VERSION: Final = 1
# Runs whose carry predates the pin ran under the first semantics.
UNPINNED_SEMANTICS_VERSION: Final = 1
