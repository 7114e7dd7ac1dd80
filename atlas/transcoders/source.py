"""Where transcoder files come from: a local directory or file, or a Hugging Face hub repository.

A ``Source`` lists its files as relative POSIX paths (so one discovery rule per format works on
both) and fetches one file to a local path on demand: from the hub only the files a loader asks
for are downloaded (``hf_hub_download``), never the whole repository.

Locations: ``/local/dir``, ``/local/file.pt``, ``hf://owner/repo`` or ``hf://owner/repo/sub/folder``
(optionally ``@revision`` after the repo name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from atlas.errors import AssetError

HUB_PREFIX = "hf://"


@dataclass
class Source:
    location: str  # as the user wrote it
    root: Path | None = None  # local: the directory the relative paths start from
    repo_id: str | None = None  # hub
    subfolder: str = ""  # hub: only files under this folder
    revision: str | None = None
    _files: list[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, location: str) -> Source:
        if location.startswith(HUB_PREFIX):
            parts = location[len(HUB_PREFIX) :].strip("/").split("/")
            if len(parts) < 2 or not all(parts[:2]):
                raise AssetError(f"hub location {location!r} is not hf://OWNER/REPO[/FOLDER]")
            repo, _, revision = parts[1].partition("@")
            return cls(location, repo_id=f"{parts[0]}/{repo}", subfolder="/".join(parts[2:]), revision=revision or None)
        path = Path(location).expanduser()
        if not path.exists():
            raise AssetError(f"no such file or directory: {path}")
        if path.is_file():  # a single file: its full path carries the layer (e.g. layer_3/.../params.npz)
            path = path.resolve()
            return cls(location, root=Path(path.anchor), _files=[path.relative_to(path.anchor).as_posix()])
        return cls(location, root=path)

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def files(self) -> list[str]:
        """Every file under the location, as sorted relative POSIX paths."""
        if self._files is None:
            if self.is_hub:
                self._files = self._hub_files()
            else:
                assert self.root is not None
                self._files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return self._files

    def files_by_layer(self, pattern: re.Pattern[str], prefer=None) -> dict[int, str]:
        """{layer: file} for files whose path matches ``pattern`` (group 1 = the layer); with
        several files for a layer (e.g. two widths) the one whose match has the smallest
        ``prefer(match)``, or the first by name without ``prefer``."""
        best: dict[int, tuple] = {}
        for rel in self.files():
            m = pattern.search(rel)
            if m:
                layer, key = int(m.group(1)), (prefer(m) if prefer else ())
                if layer not in best or key < best[layer][0]:
                    best[layer] = (key, rel)
        return {layer: rel for layer, (_, rel) in best.items()}

    def has(self, rel: str) -> bool:
        """Whether the file ``rel`` exists (locally also beside a single-file location)."""
        if self.is_hub or rel in self.files():
            return rel in self.files()
        assert self.root is not None
        return (self.root / rel).is_file()

    def fetch(self, rel: str) -> Path:
        """A local path for the relative file ``rel`` (downloaded from the hub if needed)."""
        if self.repo_id is None:  # not is_hub, said so that the type checker sees repo_id is a str below
            assert self.root is not None
            path = self.root / rel
            if not path.is_file():
                raise AssetError(f"missing file {path}")
            return path
        from huggingface_hub import hf_hub_download

        filename = f"{self.subfolder}/{rel}" if self.subfolder else rel
        try:
            return Path(hf_hub_download(self.repo_id, filename, revision=self.revision))
        except Exception as exc:  # offline, 404, auth: one line, naming the file
            raise AssetError(
                f"could not download {filename!r} from hub repo {self.repo_id!r}: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc

    def uri(self, rel: str) -> str:
        if self.is_hub:
            sub = f"{self.subfolder}/" if self.subfolder else ""
            return f"{HUB_PREFIX}{self.repo_id}/{sub}{rel}"
        assert self.root is not None
        return str((self.root / rel).resolve())

    def _hub_files(self) -> list[str]:
        from huggingface_hub import HfApi

        assert self.repo_id is not None  # files() calls this only for a hub source
        try:
            names = HfApi().list_repo_files(self.repo_id, revision=self.revision)
        except Exception as exc:
            raise AssetError(
                f"could not list hub repo {self.repo_id!r} (offline, or no such repo?): "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        prefix = f"{self.subfolder}/" if self.subfolder else ""
        return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
