"""Keep a sweep folder's results across a change of the run-id scheme (`plan.ID_VERSION`).

A folder whose `sweep.json` names no id version (or an older one) has parts whose run ids
follow the old scheme. At its next launch, before anything is planned, the ids are
rewritten: the folder's own `config.yaml` (the config its latest launch ran) is planned
again, each run's old id computed by `plan.legacy_ids` and its new one by `plan.plan`,
and every part (and launches.jsonl) is rewritten atomically with the new ids. Runs the
old config does not explain keep their ids: they are never reused, never lost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from pipeline import store
from pipeline.core.meta import SweepMeta
from pipeline.sweep.ids import ID_VERSION
from pipeline.sweep.plan import legacy_ids, plan

log = logging.getLogger(__name__)


def folder_id_version(out_dir: Path) -> Optional[int]:
    """The id version of a folder's parts: None for a folder without sweep.json, 0 before versions."""
    path = Path(out_dir) / store.SWEEP_META
    return int(store.read_json(path).get("id_version", 0)) if path.is_file() else None


def id_mapping(out_dir: Path) -> dict[str, str]:
    """Old id -> new id of every run the folder's config.yaml plans (empty if it cannot be planned)."""
    out_dir = Path(out_dir)
    meta = store.read_json(out_dir / store.SWEEP_META)
    try:
        cfg: Any = OmegaConf.to_container(OmegaConf.load(out_dir / store.CONFIG), resolve=True)
        runs = plan(cfg, meta["data_digest"], meta.get("n_rows"), SweepMeta.from_json(meta).draw_rule)
        old = legacy_ids(cfg, meta["data_digest"], runs)
    except Exception as err:  # noqa: BLE001 - an old config we cannot plan: its runs are retrained, not lost
        log.warning(
            "run ids of %s not migrated (its config.yaml cannot be planned: %r); its runs will be trained again",
            out_dir,
            err,
        )
        return {}
    return dict(zip(old, (r.run_id for r in runs)))


def _rewrite_part(path: Path, mapping: dict[str, str]) -> tuple[int, int]:
    """Rewrite one part's run ids; (migrated, left) row counts."""
    table = pq.read_table(path)
    ids = table.column("run_id").to_pylist()
    new = [mapping.get(i, i) for i in ids]
    migrated = sum(i in mapping for i in ids)
    if migrated:
        index = table.schema.get_field_index("run_id")
        store.write_table(table.set_column(index, "run_id", pa.array(new, pa.string())), path)
    return migrated, len(ids) - migrated


def _rewrite_launches(out_dir: Path, mapping: dict[str, str]) -> None:
    path = Path(out_dir) / store.LAUNCHES
    if not path.is_file():
        return
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for line in lines:
        for task in line["tasks"]:
            task["runs"] = [mapping.get(r, r) for r in task["runs"]]
    with store.atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))


def migrate_run_ids(out_dir: Path) -> int:
    """Bring a folder's run ids to `ID_VERSION` (see the module's docstring); return the runs migrated.

    Call it holding the folder's lock, after `store.adopt_progress`.
    """
    version = folder_id_version(out_dir)
    if version is None or version >= ID_VERSION:
        return 0
    parts = store.part_files(out_dir)
    mapping = id_mapping(out_dir) if parts else {}
    migrated = left = 0
    for path in parts:  # oldest first, so the newest part still wins a duplicate
        done, kept = _rewrite_part(path, mapping)
        migrated, left = migrated + done, left + kept
    _rewrite_launches(out_dir, mapping)
    meta = store.read_json(Path(out_dir) / store.SWEEP_META)
    store.write_json({**meta, "id_version": ID_VERSION}, Path(out_dir) / store.SWEEP_META)
    log.info(
        "migrated %d run id(s) in %d part(s) from id version %d to %d%s",
        migrated,
        len(parts),
        version,
        ID_VERSION,
        f" ({left} run(s) the folder's config.yaml does not plan keep their ids)" if left else "",
    )
    return migrated
