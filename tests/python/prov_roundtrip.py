#!/usr/bin/env python3
"""Check a geoprov PROV-JSON export against the reference PROV implementation.

Usage: prov_roundtrip.py FILE [--expect JSON]

Reads FILE with the Python ``prov`` package (``ProvDocument.deserialize(f, format="json")``)
and prints, as one JSON object on stdout, the number of entities, activities, agents and
relations it found (and the relations per kind). Then prov re-serializes the document, both
texts (ours and prov's) are read back, and the two documents must be equal, hold the same
number of records, and name the same entities, activities and agents: a round trip that
loses nothing.

Any warning the reader raises while reading our document fails the check: prov 3 warns
(``ProvFutureRejectionWarning``, among others) about constructs that are not in the PROV-JSON
submission, such as an unresolvable prefix or a malformed typed literal.

--expect takes a JSON object of counts that must match, e.g.
'{"entities": 15, "activities": 15, "agents": 7, "relations": 58}'.

Exit status: 0 when every check passes, 1 when one fails (prov cannot read the document, warns,
finds other counts, or the round trip differs), 2 on a usage error or an unreadable FILE.
Needs ``pip install prov`` (``.ci/run`` installs it into a virtualenv).
"""

import argparse
import io
import json
import sys
import warnings
from collections import Counter

try:
    from prov.constants import PROV_N_MAP
    from prov.model import (
        ProvActivity,
        ProvAgent,
        ProvDocument,
        ProvEntity,
        ProvRelation,
    )
except ImportError as error:  # pragma: no cover - environment problem
    print(f"prov_roundtrip: the prov package is missing ({error}); pip install prov",
          file=sys.stderr)
    sys.exit(2)

ELEMENT_KINDS = {"entity": ProvEntity, "activity": ProvActivity, "agent": ProvAgent}


def read(text, label):
    """Deserialize PROV-JSON text, returning the document and the warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        document = ProvDocument.deserialize(io.BytesIO(text), format="json")
    return document, [f"{label}: {w.category.__name__}: {w.message}" for w in caught]


def counts(document):
    """Records per kind, as prov sees them (bundles are not used by geoprov)."""
    records = list(document.get_records())
    result = {kind: sum(isinstance(r, cls) for r in records) for kind, cls in ELEMENT_KINDS.items()}
    relations = [r for r in records if isinstance(r, ProvRelation)]
    result = {
        "entities": result["entity"],
        "activities": result["activity"],
        "agents": result["agent"],
        "relations": len(relations),
        "relations_by_kind": dict(sorted(Counter(PROV_N_MAP[r.get_type()] for r in relations).items())),
        "records": len(records),
        "bundles": len(list(document.bundles)),
    }
    return result


def element_ids(text):
    """The identifiers of the entities, activities and agents in a PROV-JSON text."""
    container = json.loads(text)
    return {kind: sorted(container.get(kind, {})) for kind in ELEMENT_KINDS}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="a PROV-JSON document written by geoprov")
    parser.add_argument("--expect", help="JSON object of counts that must match")
    args = parser.parse_args(argv)
    try:
        expected = json.loads(args.expect) if args.expect else {}
        with open(args.file, "rb") as f:
            ours_text = f.read()
    except (OSError, ValueError) as error:
        print(f"prov_roundtrip: {error}", file=sys.stderr)
        return 2
    try:
        ours, problems = read(ours_text, "reading our document")
    except Exception as error:  # noqa: BLE001 - whatever prov raises, the document failed
        print(f"prov_roundtrip: prov cannot read {args.file}: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1

    found = counts(ours)
    print(json.dumps(found, sort_keys=True))

    for key, value in expected.items():
        if found.get(key) != value:
            problems.append(f"expected {key} = {value}, prov found {found.get(key)}")
    if found["bundles"]:
        problems.append(f"unexpected bundles: {found['bundles']}")

    # prov's own serialization of what it read, then both texts read back.
    theirs_text = ours.serialize(format="json", indent=2).encode("utf-8")
    ours_back, _ = read(ours_text, "reading our document again")  # warned above already
    theirs_back, warned = read(theirs_text, "reading prov's serialization")
    problems += warned
    if ours_back != theirs_back:
        problems.append("our document and prov's re-serialization are not equal when read back")
    if counts(ours_back) != counts(theirs_back):
        problems.append(
            f"record counts differ: ours {counts(ours_back)}, prov's {counts(theirs_back)}")
    ours_ids, theirs_ids = element_ids(ours_text), element_ids(theirs_text)
    if ours_ids != theirs_ids:
        for kind in ELEMENT_KINDS:
            lost = sorted(set(ours_ids[kind]) - set(theirs_ids[kind]))
            added = sorted(set(theirs_ids[kind]) - set(ours_ids[kind]))
            if lost or added:
                problems.append(f"{kind} identifiers differ: lost {lost[:5]}, added {added[:5]}")

    for problem in problems:
        print(f"prov_roundtrip: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("prov_roundtrip: ok, the round trip through prov loses nothing", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
