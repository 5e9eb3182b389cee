"""What every embedded service reports about itself: the row of `studioops status`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ServiceState:
    name: str
    state: str  # running | stopped | not initialized | external
    pid: int | None
    address: str
    data_dir: str
    log: str
    versions: dict[str, str] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def as_dict(self) -> dict:
        return asdict(self)


class ExternalService:
    """A service on another machine (managed PostgreSQL, any S3, a Langfuse elsewhere): we neither start nor stop
    it. `start` only checks that it answers (`check`); `status` shows it as `external` at `address()`."""

    name = ""
    log_name = ""  # the embedded service's log, relative to STUDIOOPS_HOME (`logs` still finds an old one)

    def __init__(self, settings) -> None:
        self.settings = settings
        self.log = settings.home / self.log_name
        self.notes: list[str] = []

    def check(self, timeout: float) -> None:
        """Raise the service's own error when it does not answer; nothing to check by default."""

    def address(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> bool:
        self.check(timeout)
        return False

    def stop(self, timeout: float = 30.0) -> bool:
        return False

    def state(self) -> ServiceState:
        return ServiceState(self.name, "external", None, self.address(), "", "")
