"""The identity rule's operating points (facewatchd/identity.py): what the cache, the resolver core and the
recognizer all decide by."""

import pytest

from facewatchd.identity import IdentityConfig, decide, impostor_threshold


def test_the_default_naming_threshold_rises_with_the_faces_compared() -> None:
    identity = IdentityConfig()
    assert identity.naming_threshold(1) == pytest.approx(0.50)  # a home, a shop: the floor
    assert identity.naming_threshold(300) == pytest.approx(0.50)
    assert identity.naming_threshold(500) == pytest.approx(0.507, abs=0.002)
    assert identity.naming_threshold(1000) == pytest.approx(0.522, abs=0.002)
    # Past SFace's measured tail (FMR 1e-6) the threshold stops rising rather than guessing.
    assert identity.naming_threshold(10_000) == pytest.approx(impostor_threshold(1e-6))


def test_a_fixed_threshold_when_fpir_is_off() -> None:
    identity = IdentityConfig(fpir=None)
    assert identity.naming_threshold(1) == identity.naming_threshold(100_000) == identity.name_threshold


@pytest.mark.parametrize(("similarity", "kind", "person"), [
    (0.60, "named", "p"),
    (0.47, "uncertain", "p"),  # near p, under the threshold: a new person "possibly p"
    (0.30, "new", None),
])
def test_decide_names_marks_or_makes_new(similarity: float, kind: str, person: str | None) -> None:
    decision = decide(("p", similarity), 300, IdentityConfig())
    assert (decision.kind, decision.person_id) == (kind, person)
    assert decide(None, 300, IdentityConfig()).kind == "new"


def test_a_weak_link_needs_the_same_camera_within_the_window_and_the_link_similarity() -> None:
    from facewatchd.identity import IdentityConfig, decide, weak_link

    config = IdentityConfig()  # link_similarity 0.25, link_window_s 300
    new = decide(("person-a", 0.30), 1, config)
    assert new.kind == "new" and new.person_id is None and new.nearest == "person-a"
    assert weak_link(new, 1000.0, 1200.0, config) == "person-a"
    assert weak_link(new, 1000.0, 1301.0, config) is None  # too long ago
    assert weak_link(new, None, 1200.0, config) is None  # never seen on this camera
    assert weak_link(decide(("person-a", 0.20), 1, config), 1000.0, 1200.0, config) is None  # too unlike
    assert weak_link(new, 1000.0, 1200.0, IdentityConfig(link_similarity=None)) is None  # off
    assert IdentityConfig().search_threshold == 0.25
    import pytest

    with pytest.raises(ValueError, match="link_similarity"):
        IdentityConfig(link_similarity=0.4)
