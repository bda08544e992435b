"""Fuzzing every weights reader with crafted and randomly damaged files.

Each file is loaded in a worker subprocess (see fuzz_weights.py) under a
memory limit and a timeout. For every case: no hang, no crash, no memory
blow-up, no code run (the crafted pickles try to create a marker file), no file
left behind by a failed convert, and either a clean WeightsFormatError naming
the file or a successful load. A successful load of a damaged own-format file
(fletcher32 and HDF5 1.8 checksums) or zip checkpoint (CRCs) must equal the
undamaged file; formats without checksums may differ where damage hit weight
bytes. ``MINICNN_FUZZ_CASES=N`` runs N random mutants (default 250),
``MINICNN_FUZZ_SEED`` picks their seed (default 8).
"""
import collections
import os

import pytest

import fuzz_weights as fw

CHECKSUMMED = ("minicnn", "torch-zip")
PEAK_RSS_LIMIT = 1 << 30  # bytes; the worker holds about 0.3 GiB after its imports


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    pytest.importorskip("torch")  # writes the torch seeds
    folder = tmp_path_factory.mktemp("fuzz")
    marker = folder / "PWNED_by_a_weights_file"
    seeds = fw.make_seeds(folder / "seeds")
    cases = [fw.Case("seed", fmt, path, "ok") for fmt, path in seeds.items()]
    cases += fw.crafted_cases(folder / "crafted", seeds, marker)
    (folder / "mutants").mkdir()
    count = int(os.environ.get("MINICNN_FUZZ_CASES", "250"))
    cases += fw.mutant_cases(folder / "mutants", seeds, count,
                             seed=int(os.environ.get("MINICNN_FUZZ_SEED", "8")))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    records = fw.run_cases(cases, folder)
    after = sorted(p.relative_to(folder) for p in folder.rglob("*")
                   if p.name not in ("cases.jsonl", "worker.stderr", "out"))
    return cases, records, marker, before, after


def test_every_case_fails_cleanly_or_loads(fuzz_run):
    cases, records, _, _, _ = fuzz_run
    bad = []
    for case, record in zip(cases, records):
        stages_clean = all(outcome in ("ok", "error") for outcome in record["stages"].values())
        if record["outcome"] not in ("ok", "error") or not stages_clean:
            bad.append((case.format, case.name, case.path.name, record["outcome"],
                        record["stages"], record["detail"]))
    assert not bad, f"{len(bad)} unclean outcomes, e.g. {bad[:5]}"


def test_crafted_cases_have_their_outcome(fuzz_run):
    cases, records, _, _, _ = fuzz_run
    wrong = [(case.format, case.name, record["outcome"], record["detail"])
             for case, record in zip(cases, records)
             if case.expect != "either" and record["outcome"] != case.expect]
    assert not wrong, wrong
    refused = [case for case in cases if case.expect == "error"]
    assert len(refused) > 100  # the attack list has not quietly shrunk


def test_no_code_ran_and_no_file_left_behind(fuzz_run):
    cases, records, marker, before, after = fuzz_run
    assert not marker.exists()
    assert after == before  # no file created next to the cases (e.g. by path traversal)
    left = [(case.name, record["left"]) for case, record in zip(cases, records)
            if record.get("left")]
    assert not left
    converted = [record["stages"]["convert"] for record in records if "convert" in record["stages"]]
    assert "ok" in converted and "error" in converted  # convert ran both ways


def test_memory_stays_bounded(fuzz_run):
    _, records, _, _, _ = fuzz_run
    assert max(record.get("peak_rss", 0) for record in records) * 1024 < PEAK_RSS_LIMIT


def test_damage_to_checksummed_formats_never_loads_different_weights(fuzz_run):
    cases, records, _, _, _ = fuzz_run
    seed = {case.format: record["digest"] for case, record in zip(cases, records)
            if case.name == "seed"}
    assert set(seed) == set(fw.FORMATS) and all(seed.values())
    differing = [(case.format, case.name, case.path.name) for case, record in zip(cases, records)
                 if case.name in fw.MUTATIONS and case.format in CHECKSUMMED
                 and record["outcome"] == "ok" and record["digest"] != seed[case.format]]
    assert not differing, differing


def test_mutants_reach_every_outcome(fuzz_run, capsys):
    """The random damage is neither always refused nor always harmless, per format,
    and the counts per format and outcome are printed (for the README)."""
    cases, records, _, _, _ = fuzz_run
    counts = collections.Counter((case.format, "random" if case.name in fw.MUTATIONS else "crafted",
                                  record["outcome"]) for case, record in zip(cases, records))
    with capsys.disabled():
        print(f"\nfuzz cases: {len(cases)}")
        for key in sorted(counts):
            print("  ", *key, counts[key])
    for fmt in fw.FORMATS:
        assert counts[(fmt, "random", "error")] > 0, fmt
    assert sum(counts[(fmt, "random", "ok")] for fmt in fw.FORMATS) > 0
