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
