"""The invoker: runs attempts of invocations against deployments (service protocol V5/V6)."""

from processor.invoker.attempt import (
    AttemptRequest,
    AttemptResult,
    DeploymentTarget,
    Ended,
    Failed,
    Invoker,
    Suspended,
)

__all__ = ["AttemptRequest", "AttemptResult", "DeploymentTarget", "Ended", "Failed", "Invoker", "Suspended"]
