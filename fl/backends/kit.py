"""The driver's kit as a backend: `fl train`, `fl run`, `fl status` and `fl down` on a federation of kits (fl/kit.py).

The kit's directory is the state directory. Its driver and sidecar are a Compose project
that the driver's host starts with `docker compose up -d`, like every other party's kit;
the players run on their parties' hosts, so this side can start, restart or shape none of
them, and it knows them only by what they answer through its own sidecar.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fl.backends import PlayerStatus, UpSettings
from fl.backends.docker import CLUSTER_FILE_IN_CONTAINER, DockerBackend, _health, compose
from fl.cluster import DRIVER, Cluster
from fl.errors import FLError

PROJECT_SETTING = "COMPOSE_PROJECT_NAME"


class KitBackend(DockerBackend):
    name = "kit"

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.directory = self.state_dir
        settings = self.directory / ".env"
        lines = settings.read_text().splitlines() if settings.is_file() else []
        names = [line.split("=", 1)[1] for line in lines if line.startswith(f"{PROJECT_SETTING}=")]
        if not names:
            raise FLError(f"{settings} names no {PROJECT_SETTING}: is {self.directory} the driver's kit from `fl kit`?")
        self.project = names[0]

    def check(self, settings: UpSettings, shaped_links: bool = False) -> None:
        raise self._started_by_compose()

    def up(self, settings: UpSettings) -> Cluster:
        raise self._started_by_compose()

    def _started_by_compose(self) -> FLError:
        return FLError(f"{self.directory} is the driver's kit: start it with `docker compose up -d` there, not `fl up`")

    def status(self) -> list[PlayerStatus]:
        """Every player as probed from the driver's container, through its sidecar."""
        cluster = Cluster.load(self.cluster_file)
        driver = _health(self.container(DRIVER))
        if driver != "running":
            raise FLError(f"the driver's kit is not running ({driver}): `docker compose up -d` in {self.directory}")
        probed = subprocess.run(
            ["docker", "exec", self.container(DRIVER), "fl", "probe", "--config", CLUSTER_FILE_IN_CONTAINER],
            capture_output=True,
            text=True,
        )
        if probed.returncode != 0:
            raise FLError(f"probing the players from the driver's container failed: {probed.stderr.strip()}")
        answering = json.loads(probed.stdout)
        link = f"mutual TLS via {DRIVER}'s sidecar ({_health(self.container(f'{DRIVER}-tls'))})"
        return [
            PlayerStatus(
                player=player.name,
                role=player.role,
                address=player.address,
                process="remote",
                where=cluster.mesh.sidecar_address(player.name),
                server="answering" if answering[player.name] else "not answering",
                link=link,
            )
            for player in cluster.players
        ]

    def restart_player(self, name: str) -> None:
        raise FLError(f"{name} runs from its own kit on its party's host: restart it there (`docker compose restart`)")

    def down(self, volumes: bool = False) -> list[str]:
        """The driver's side only; the kit stays a kit (its record is kept), the parties' kits run on."""
        services = self._services()
        compose(self.project, self.directory, "down", "--remove-orphans", *(["--volumes"] if volumes else []))
        return services

    @property
    def where(self) -> str:
        return f"the driver's kit in {self.directory} (Compose project {self.project}); players at their parties' hosts"

    def shaped_links(self, cluster: Cluster) -> list[tuple[str, str]]:
        raise FLError("the links of a federation of kits are the parties' own networks: shape them on their hosts")
