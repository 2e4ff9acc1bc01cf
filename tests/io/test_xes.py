"""``ev.read_xes`` gives the same DataFrame with or without its compiled reader (``rustxes``).

The reference is this package's own expat reader (``_read_with_expat``), which is what
``read_xes`` ran before rustxes was used: same columns in the same order, same dtypes,
same values, on the real logs in ``data/``, on small fixtures, gzipped and plain, and
on the cases where rustxes reads differently (lists, "TRUE", ids, mixed types,
namespaced tags, a key twice in one event): there ``read_xes`` must fall back.

Data: BPI Challenge 2012, B.F. van Dongen (2012), 4TU.ResearchData,
DOI 10.4121/uuid:3926db30-f712-4394-aebc-75976070e91f; Road Traffic Fine Management
Process (100-trace subset), M. de Leoni and F. Mannhardt, 4TU.ResearchData,
DOI 10.4121/uuid:270fd440-1057-4fb9-89a9-b699b47990f5; see ``data/README.md``.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

import eventador as ev
from eventador.io.importing import _checked, _fast_frame, _read_with_expat
from tests.io.test_importing import XES

DATA = Path(__file__).resolve().parents[2] / "data"
HAVE_RUSTXES = importlib.util.find_spec("rustxes") is not None
needs_rustxes = pytest.mark.skipif(not HAVE_RUSTXES, reason="rustxes is not installed (pip install 'eventador[xes]')")


def real(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the real event logs ship in the repository's data/ folder")
    return path


def same_as_reference(path: Path) -> pd.DataFrame:
    got, expected = ev.read_xes(path), _read_with_expat(path)
    assert list(got.columns) == list(expected.columns)
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    return got


@pytest.mark.parametrize("name", ["bpic2012.xes.gz", "roadtraffic100traces.xes"])
def test_real_logs_read_the_same_and_take_the_fast_path(name: str) -> None:
    path = real(name)
    same_as_reference(path)
    if HAVE_RUSTXES:
        fast = _fast_frame(path)
        assert fast is not None and _checked(path, fast) is not None, "rustxes was not used"


def test_the_road_log_gzipped_reads_as_the_plain_file(tmp_path: Path) -> None:
    plain = real("roadtraffic100traces.xes")
    packed = tmp_path / "road.xes.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    pd.testing.assert_frame_equal(same_as_reference(packed), ev.read_xes(plain), check_exact=True)


VARIANTS = {
    "fixture (has a <list>)": XES,
    "TRUE for a boolean": XES.replace('value="true"', 'value="TRUE"'),
    "an id that is no UUID": XES.replace('<int key="items" value="3"/>', '<id key="ident" value="abc"/>'),
    "a key of two types": XES.replace('<string key="org:resource" value="anna"/>', '<string key="items" value="x"/>'),
    "a key twice in an event": XES.replace('<int key="items" value="3"/>',
                                           '<int key="items" value="3"/><int key="items" value="5"/>'),
    "namespaced tags": XES.replace("<log ", "<xes:log xmlns:xes='urn:x' ").replace("</log>", "</xes:log>")
    .replace("<trace>", "<xes:trace>").replace("</trace>", "</xes:trace>"),
    "a nested attribute in an event": XES.replace('<int key="items" value="3"/>',
                                                  '<int key="items" value="3"><int key="sub" value="1"/></int>'),
}


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_small_logs_read_the_same_where_rustxes_reads_differently(tmp_path: Path, variant: str, gz: bool) -> None:
    text = VARIANTS[variant].encode()
    path = tmp_path / ("log.xes.gz" if gz else "log.xes")
    path.write_bytes(gzip.compress(text) if gz else text)
    same_as_reference(path)


@needs_rustxes
def test_the_check_catches_what_rustxes_reads_differently(tmp_path: Path) -> None:
    path = tmp_path / "log.xes"
    path.write_text(VARIANTS["TRUE for a boolean"], encoding="utf-8")
    fast = _fast_frame(path)
    assert fast is not None and fast["urgent"].iloc[0] is not True  # rustxes reads "TRUE" as False
    assert _checked(path, fast) is None
    assert ev.read_xes(path)["urgent"].iloc[0] is True
