"""The one settings resource: which spec, which home (warehouse file + model store); where they are is decided in
``regime_assets.home``."""


from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from regime_assets.core.model_store import ModelStore
from regime_assets.home.paths import default_home, models_root, warehouse_path
from regime_assets.resources.warehouse import locked_connection
from regime_assets.spec import Spec, load_spec


class RegimeSettings(ConfigurableResource):
    """Spec path (None: $REGIME_ASSETS_SPEC or the packaged default), home folder (None: default_home()) and the
    model store's root (None: $REGIME_ASSETS_MODEL_STORE or <home>/models; a folder or an s3:// / gs:// URL)."""

    spec_path: str | None = None
    home: str | None = None
    model_store_root: str | None = None

    _spec: Spec | None = PrivateAttr(default=None)

    @property
    def spec(self) -> Spec:
        if self._spec is None:
            self._spec = load_spec(self.spec_path)
        return self._spec

    @property
    def home_path(self) -> Path:
        p = Path(self.home).expanduser().resolve() if self.home else default_home()
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def database(self) -> Path:
        return warehouse_path(self.home_path)

    @property
    def models_root(self) -> str:
        return models_root(self.home_path, self.model_store_root)

    @property
    def model_store(self) -> ModelStore:
        return ModelStore(self.models_root)

    @contextmanager
    def connect(self, read_only: bool = False, retries: int = 20):
        """A DuckDB connection to the warehouse under its cross-process file lock (see ``warehouse_lock``)."""
        with locked_connection(self.database, read_only=read_only, retries=retries) as conn:
            yield conn
