"""What `faces list` shows comes from the records: a person's sightings (faces devices sent), their tracks,
the cameras and when each last saw them, and a crop; on the real local resolver, with real faces."""

from __future__ import annotations

from pathlib import Path

from facewatchd.messages import FaceQuery, Resolution, new_face_id
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from tests.support.faces import stranger_crop


async def test_sightings_tracks_and_cameras_are_counted_from_the_records(tmp_path: Path) -> None:
    now = [1000.0]
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig(), clock=lambda: now[0])
    try:
        resolver = backend.resolver

        def seen(camera: str, track: str, thing: str = "door-1") -> FaceQuery:
            return FaceQuery(new_face_id(), thing, camera, track, stranger_crop(3), None, 0.0)

        first = await resolver.resolve(seen("front", "t1"))
        for q in (seen("front", "t1"), seen("front", "t2"), seen("back", "t9", "door-2")):
            now[0] += 10
            assert (await resolver.resolve(q)).person_id == first.person_id
        person = await backend.stores.names.get(first.person_id)
        assert person is not None and person.sightings == 4 and person.tracks == 3
        assert person.last_seen_on == {"door-1/front": 1020.0, "door-2/back": 1030.0}
        assert person.crop_key and (tmp_path / "resolver" / "crops" / person.crop_key).is_file()

        # a record that does not say its track (as those before tracks were kept): tracks unknown, not 0
        now[0] += 10
        await backend.stores.names.record(Resolution("f-old", "person-old", None, 1.0, True), "door-1", "k", None)
        old = await backend.stores.names.get("person-old")
        assert old is not None and (old.sightings, old.tracks, old.last_seen_on) == (1, None, {"door-1": 1040.0})
    finally:
        backend.close()
