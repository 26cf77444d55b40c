from appliance.assembly import Assembler, classify, expected_count, series_key
from appliance.handovers import Frame, Instance, PixelRef, SeriesRole


def frame(z: float, t: float | None, orientation=(1, 0, 0, 0, 1, 0)) -> Frame:
    return Frame((0.0, 0.0, z), orientation, (1.5, 1.5), t, PixelRef("x", 0, 8, 8, "<u2"))


def inst(n: int, z: float, t: float | None, series: str = "1.2.3", total: int | None = None, **kw) -> Instance:
    return Instance(sop_instance_uid=f"{series}.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.4", series_uid=series,
                    study_uid="1.2", modality="MR", transfer_syntax_uid="1.2.840.10008.1.2.1",
                    frames=(frame(z, t),), images_in_acquisition=total, **kw)


def test_complete_as_soon_as_the_tags_say_so():
    asm = Assembler(quiet_period_s=5)
    outcomes = [asm.add(inst(s * 3 + p, -8.0 * s, 30.0 * p, total=12), f"p{s}{p}", 100.0)
                for s in range(4) for p in range(3)]
    assert all(o.complete is None for o in outcomes[:-1])
    done = outcomes[-1].complete
    assert done.info.completed_by == "tags" and done.info.received == 12
    assert done.info.role is SeriesRole.CINE_SAX
    assert len(asm) == 0


def test_quiet_period_closes_a_series_without_a_count_and_duplicates_are_refused():
    asm = Assembler(quiet_period_s=5)
    for s in range(3):
        for p in range(2):
            asm.add(inst(s * 2 + p, -8.0 * s, 30.0 * p), "p", 100.0)
    assert asm.add(inst(0, 0.0, 0.0), "p", 101.0).duplicate
    assert asm.due(104.9) == []  # the duplicate at 101 did not extend the quiet period
    (done,) = asm.due(105.0)
    assert done.info.completed_by == "quiet" and done.info.received == 6


def test_a_series_short_of_its_count_waits_out_a_stall_and_is_closed_only_after_the_incomplete_timeout():
    """A sender that stalls longer than the quiet period must not cut a counted series in two (the rest would then
    be refused as late for a finished series): it waits for its count, or the incomplete timeout."""
    asm = Assembler(quiet_period_s=1, incomplete_timeout_s=60)
    for n in range(4):
        asm.add(inst(n, -8.0 * (n // 2), 30.0 * (n % 2), total=12), "p", 100.0)
    assert asm.due(130.0) == []  # 30 s quiet: far past the quiet period, the series still waits
    outcomes = [asm.add(inst(n, -8.0 * (n // 2), 30.0 * (n % 2), total=12), "p", 131.0) for n in range(4, 12)]
    assert outcomes[-1].complete is not None and outcomes[-1].complete.info.completed_by == "tags"
    assert outcomes[-1].complete.info.received == 12
    for n in range(4):  # another series that never gets its last images
        asm.add(inst(n, -8.0 * (n // 2), 30.0 * (n % 2), series="9.9", total=12), "p", 200.0)
    assert asm.due(259.9) == []
    (done,) = asm.due(260.0)
    assert done.info.completed_by == "incomplete" and done.info.received == 4 and done.info.expected == 12


def test_the_incomplete_timeout_is_never_shorter_than_the_quiet_period():
    assert Assembler(quiet_period_s=10, incomplete_timeout_s=2).incomplete_timeout_s == 10


def test_roles_from_geometry_and_timing_not_names():
    stack = [frame(-8.0 * s, 30.0 * p) for s in range(5) for p in range(10)]
    assert classify(stack) is SeriesRole.CINE_SAX
    assert classify([frame(0.0, 30.0 * p) for p in range(10)]) is SeriesRole.CINE_LAX
    assert classify([frame(-8.0 * s, None) for s in range(5)]) is SeriesRole.OTHER  # a single-phase stack
    assert classify(stack, {"ORIGINAL", "LOCALIZER"}) is SeriesRole.OTHER
    tilted = [*stack[:-1], frame(0.0, 30.0, (1, 0, 0, 0, 0, 1))]
    assert classify(tilted) is SeriesRole.OTHER  # planes that are not parallel are not one stack


def test_expected_count_and_keys():
    assert expected_count(inst(1, 0, 0, total=300)) == 300
    assert expected_count(inst(1, 0, 0)) is None
    assert series_key("1.2.3") == series_key("1.2.3") != series_key("1.2.4")
    assert "1.2.3" not in series_key("1.2.3")
