"""Every dataset layout, written in its own format by the test and read back."""

from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path

import pytest

from model.train.datasets import (
    ClipRef,
    DatasetError,
    Pair,
    RetrievalSet,
    layouts,
    load_pairs,
    load_retrieval_set,
    lsmdc_movie,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


def _video_ids(pairs: list[Pair]) -> set[str]:
    return {p.clip.video_id for p in pairs}


def test_layouts_are_listed() -> None:
    assert layouts() == ["activitynet", "csv", "didemo", "jsonl", "lsmdc", "msrvtt", "msvd"]


# --------------------------------------------------------------------------------------------- generic


def _synth_like(root: Path, count: int = 20) -> Path:
    """A captions.jsonl in the format ``tvr synth`` writes."""
    records = [
        {"video": f"videos/{i:04d}.mp4", "caption": f"a red circle number {i}", "duration": 3.0} for i in range(count)
    ]
    return _jsonl(root / "captions.jsonl", records)


def test_jsonl_single_file_is_test_split_and_resolves_paths(tmp_path: Path) -> None:
    _synth_like(tmp_path)
    pairs = load_pairs("jsonl", tmp_path, "test")
    assert len(pairs) == 20
    assert pairs[3] == Pair(ClipRef("videos/0003.mp4", tmp_path / "videos/0003.mp4"), "a red circle number 3")
    # the annotation file itself may be the root
    assert load_pairs("jsonl", tmp_path / "captions.jsonl", "test") == pairs
    # or an option names it; paths are relative to the file's folder
    _jsonl(tmp_path / "ann" / "set.jsonl", [{"video": "x.mp4", "caption": "x"}])
    assert load_pairs("jsonl", tmp_path, "test", file="ann/set.jsonl")[0].clip.path == tmp_path / "ann" / "x.mp4"
    with pytest.raises(DatasetError, match=r"nope.jsonl: annotation file does not exist"):
        load_pairs("jsonl", tmp_path, "test", file="nope.jsonl")


def test_jsonl_held_out_val_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    _synth_like(tmp_path, count=40)
    train = load_pairs("jsonl", tmp_path, "train")
    val = load_pairs("jsonl", tmp_path, "val")
    assert len(val) == 2  # 5 % of 40 videos
    assert _video_ids(train).isdisjoint(_video_ids(val))
    assert len(train) + len(val) == 40
    assert load_pairs("jsonl", tmp_path, "val") == val
    assert load_pairs("jsonl", tmp_path, "val", val_fraction=0.25, seed=0) != load_pairs(
        "jsonl", tmp_path, "val", val_fraction=0.25, seed=1
    )
    assert len(load_pairs("jsonl", tmp_path, "train", val_fraction=0.0)) == 40
    with pytest.raises(DatasetError, match="val_fraction=0"):
        load_pairs("jsonl", tmp_path, "val", val_fraction=0.0)
    with pytest.raises(DatasetError, match=r"val_fraction must be a number in \[0, 1\)"):
        load_pairs("jsonl", tmp_path, "val", val_fraction=1.0)


def test_held_out_val_keeps_every_caption_of_a_video_together(tmp_path: Path) -> None:
    records = [{"video": f"v{i % 10}.mp4", "caption": f"caption {i}"} for i in range(50)]
    _jsonl(tmp_path / "captions.jsonl", records)
    train = load_pairs("jsonl", tmp_path, "train", val_fraction=0.3, seed=7)
    val = load_pairs("jsonl", tmp_path, "val", val_fraction=0.3, seed=7)
    assert len(_video_ids(val)) == 3 and len(val) == 15
    assert _video_ids(train).isdisjoint(_video_ids(val))
    # the choice depends on the ids, not on the order of the file
    _jsonl(tmp_path / "shuffled" / "captions.jsonl", records[::-1])
    assert _video_ids(load_pairs("jsonl", tmp_path / "shuffled", "val", val_fraction=0.3, seed=7)) == _video_ids(val)


def test_jsonl_times_absolute_paths_and_per_split_files(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "long.mp4"
    _jsonl(
        tmp_path / "train.jsonl",
        [
            {"video": str(absolute), "caption": "first part", "start": 0, "end": 4.5},
            {"video": str(absolute), "caption": "second part", "start": 4.5},
        ],
    )
    _jsonl(tmp_path / "val.jsonl", [{"video": "a.mp4", "caption": "val caption"}])
    _jsonl(tmp_path / "test.jsonl", [{"video": "b.mp4", "caption": "test caption", "end": 2}])
    train = load_pairs("jsonl", tmp_path, "train")
    assert [(p.clip.path, p.clip.start, p.clip.end) for p in train] == [(absolute, 0.0, 4.5), (absolute, 4.5, None)]
    assert load_pairs("jsonl", tmp_path, "val")[0].caption == "val caption"
    assert load_pairs("jsonl", tmp_path, "test")[0].clip == ClipRef("b.mp4", tmp_path / "b.mp4", None, 2.0)
    with pytest.raises(DatasetError, match="val.jsonl: is the val split"):
        load_pairs("jsonl", tmp_path, "train", val_fraction=0.1)
    # two clips of one video are two clips of the retrieval set
    assert len(load_retrieval_set("jsonl", tmp_path, "train").clips) == 2


def test_csv_layout(tmp_path: Path) -> None:
    _write(
        tmp_path / "test.csv",
        'video,caption,start,end\nclips/a.mp4,"a dog, running",1.5,3\n'
        "clips/b.mp4,a cat,,\nclips/a.mp4,a dog again,1.5,3\n",
    )
    rs = load_retrieval_set("csv", tmp_path, "test")
    assert rs.captions == ["a dog, running", "a cat", "a dog again"]
    assert rs.caption_clip == [0, 1, 0]
    assert rs.clips == [
        ClipRef("clips/a.mp4", tmp_path / "clips/a.mp4", 1.5, 3.0),
        ClipRef("clips/b.mp4", tmp_path / "clips/b.mp4"),
    ]
    with pytest.raises(DatasetError, match="no train.csv or captions.csv"):
        load_pairs("csv", tmp_path, "train")


@pytest.mark.parametrize(
    ("layout", "name", "text", "message"),
    [
        (
            "jsonl",
            "captions.jsonl",
            '{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4", \n',
            r"captions.jsonl:2: not valid JSON",
        ),
        ("jsonl", "captions.jsonl", '{"video": "a.mp4"}\n', r"captions.jsonl:1: missing key 'caption'"),
        ("jsonl", "captions.jsonl", '["a.mp4", "x"]\n', r"captions.jsonl:1: expected a JSON object"),
        (
            "jsonl",
            "captions.jsonl",
            '{"video": "a.mp4", "caption": "x", "start": 3, "end": 1}\n',
            r"captions.jsonl:1: end",
        ),
        (
            "jsonl",
            "captions.jsonl",
            '{"video": "a.mp4", "caption": "x", "start": "soon"}\n',
            r"captions.jsonl:1: start must be",
        ),
        (
            "jsonl",
            "captions.jsonl",
            '{"video": "a.mp4", "caption": "  "}\n',
            r"captions.jsonl:1: caption must be a non-empty",
        ),
        ("csv", "captions.csv", "video,text\na.mp4,hello\n", r"captions.csv:1: header lacks column\(s\) caption"),
        ("csv", "captions.csv", "", r"captions.csv:1: header lacks column\(s\) video, caption"),
    ],
)
def test_generic_malformed_files_name_file_and_line(
    tmp_path: Path, layout: str, name: str, text: str, message: str
) -> None:
    _write(tmp_path / name, text)
    with pytest.raises(DatasetError, match=message):
        load_pairs(layout, tmp_path, "test")


# --------------------------------------------------------------------------------------------- MSR-VTT


def _msrvtt(root: Path, train_ids: list[str], captions_per_video: int = 3) -> None:
    _write(root / "MSRVTT_train.9k.csv", "video_id\n" + "".join(f"{v}\n" for v in train_ids))
    sentences = [
        {"caption": f"{v} caption {k}", "video_id": v, "sen_id": n}
        for n, (v, k) in enumerate((v, k) for k in range(captions_per_video) for v in [*train_ids, "video9000"])
    ]
    _write(root / "MSRVTT_data.json", json.dumps({"info": {}, "videos": [], "sentences": sentences}))
    _write(
        root / "MSRVTT_JSFUSION_test.csv",
        "key,vid_key,video_id,sentence\n"
        'ret0,msr9000,video9000,"a man, in a hat, sings"\n'
        "ret1,msr9001,video9001,a dog runs\n"
        "ret2,msr9002,video9002,people dance\n",
    )


def test_msrvtt_train_expands_every_caption(tmp_path: Path) -> None:
    train_ids = [f"video{i}" for i in range(40)]
    _msrvtt(tmp_path, train_ids)
    full = load_pairs("msrvtt", tmp_path, "train", val_fraction=0)
    assert len(full) == 120 and _video_ids(full) == set(train_ids)
    assert [p.caption for p in full if p.clip.video_id == "video7"] == [f"video7 caption {k}" for k in range(3)]
    assert full[0].clip.path == tmp_path / "videos" / "video0.mp4"
    train, val = load_pairs("msrvtt", tmp_path, "train"), load_pairs("msrvtt", tmp_path, "val")
    assert len(_video_ids(val)) == 2 and len(val) == 6
    assert _video_ids(train) | _video_ids(val) == set(train_ids)
    assert _video_ids(train).isdisjoint(_video_ids(val))
    val_set = load_retrieval_set("msrvtt", tmp_path, "val")
    assert len(val_set.clips) == 2 and val_set.caption_clip == [0, 0, 0, 1, 1, 1]


def test_msrvtt_test_is_the_jsfusion_pairs(tmp_path: Path) -> None:
    _msrvtt(tmp_path, ["video0", "video1"])
    rs = load_retrieval_set("msrvtt", tmp_path, "test", videos_dir="/data/MSRVTT_Videos")
    assert rs.captions == ["a man, in a hat, sings", "a dog runs", "people dance"]
    assert [c.path for c in rs.clips] == [Path(f"/data/MSRVTT_Videos/video900{i}.mp4") for i in range(3)]
    assert rs.caption_clip == [0, 1, 2]


def test_msrvtt_errors(tmp_path: Path) -> None:
    _msrvtt(tmp_path, ["video0", "video1", "video2"])
    _write(tmp_path / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo77\n")
    with pytest.raises(DatasetError, match=r"MSRVTT_train.9k.csv:3: video 'video77' has no caption"):
        load_pairs("msrvtt", tmp_path, "train")
    (tmp_path / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(DatasetError, match=r"MSRVTT_JSFUSION_test.csv: missing"):
        load_pairs("msrvtt", tmp_path, "test")
    _write(tmp_path / "MSRVTT_data.json", '{"sentences": [{"video_id": "video0"}]}')
    with pytest.raises(
        DatasetError, match=r"MSRVTT_data.json: sentences\[0\]: expected an object with video_id and caption"
    ):
        load_pairs("msrvtt", tmp_path, "train")
    _write(tmp_path / "MSRVTT_data.json", '{"sentences": [')
    with pytest.raises(DatasetError, match=r"MSRVTT_data.json:1: invalid JSON"):
        load_pairs("msrvtt", tmp_path, "train")


# ---------------------------------------------------------------------------------------------- DiDeMo


def test_didemo_joins_descriptions_in_time_order(tmp_path: Path) -> None:
    data = [
        {"video": "111@N00_1_a.mov", "description": "the dog sits down.", "times": [[3, 3], [3, 4], [2, 3], [3, 3]]},
        {"video": "222@N00_2_b.mp4", "description": "a car drives by", "times": [[0, 0], [0, 1], [0, 0], [0, 0]]},
        {"video": "111@N00_1_a.mov", "description": "a dog enters.", "times": [[0, 1], [0, 0], [0, 0], [1, 1]]},
        {"video": "111@N00_1_a.mov", "description": "the dog leaves.", "times": [[5, 5], [5, 5], [4, 5], [5, 5]]},
    ]
    _write(tmp_path / "test_data.json", json.dumps(data))
    converted = _touch(tmp_path / "videos" / "part1" / "111@N00_1_a.mp4")  # .mov converted to .mp4
    exact = _touch(tmp_path / "videos" / "222@N00_2_b.mp4")
    pairs = load_pairs("didemo", tmp_path, "test")
    assert pairs == [
        Pair(ClipRef("111@N00_1_a.mov", converted), "a dog enters. the dog sits down. the dog leaves."),
        Pair(ClipRef("222@N00_2_b.mp4", exact), "a car drives by"),
    ]
    with pytest.raises(DatasetError, match=r"val_data.json: missing; the didemo layout reads its val split"):
        load_pairs("didemo", tmp_path, "val")
    with pytest.raises(DatasetError, match=r"val_fraction.*official val split"):
        load_pairs("didemo", tmp_path, "test", val_fraction=0.1)


def test_didemo_missing_video_lists_what_was_tried(tmp_path: Path) -> None:
    data = [
        {"video": "a.mov", "description": "x", "times": [[0, 0]]},
        {"video": "b.mov", "description": "y", "times": [[1, 1]]},
    ]
    _write(tmp_path / "train_data.json", json.dumps(data))
    _touch(tmp_path / "videos" / "b.mov")
    with pytest.raises(
        DatasetError, match=r"train_data.json: no file for video 'a.mov'.*tried a.mov, a, a.mov.mp4.*a.mp4.*1 of 2"
    ):
        load_pairs("didemo", tmp_path, "train")
    assert _video_ids(load_pairs("didemo", tmp_path, "train", skip_missing=True)) == {"b.mov"}
    _write(tmp_path / "train_data.json", json.dumps([{"video": "b.mov", "description": "y", "times": "soon"}]))
    with pytest.raises(DatasetError, match=r"train_data.json: \[0\]: times must be"):
        load_pairs("didemo", tmp_path, "train")


# ----------------------------------------------------------------------------------------- ActivityNet


def _activitynet_entry(n: int) -> dict:
    return {
        "duration": 60.0,
        "timestamps": [[30.0, 50.0], [0.0, 30.0], [55.0, 60.0]],
        "sentences": [f" then video {n} ends.", f"video {n} begins.", "  "],  # blank sentences are left out
    }


def test_activitynet_paragraphs_splits_and_file_resolution(tmp_path: Path) -> None:
    train_ids = [f"v_id{i:03d}" for i in range(20)]
    _write(tmp_path / "train.json", json.dumps({v: _activitynet_entry(i) for i, v in enumerate(train_ids)}))
    _write(tmp_path / "val_1.json", json.dumps({"v_test1": _activitynet_entry(100), "test2": _activitynet_entry(101)}))
    videos = tmp_path / "videos"
    for i, v in enumerate(train_ids):  # a mix of names: with and without the v_ prefix, several containers
        _touch(videos / f"{v if i % 2 else v[2:]}{'.mp4' if i % 3 else '.webm'}")
    _touch(videos / "v_test1.mkv")
    _touch(videos / "sub" / "v_test2.mp4")

    test = load_pairs("activitynet", tmp_path, "test")
    assert [(p.clip.video_id, p.clip.path, p.caption) for p in test] == [
        ("v_test1", videos / "v_test1.mkv", "video 100 begins. then video 100 ends."),
        ("test2", videos / "sub" / "v_test2.mp4", "video 101 begins. then video 101 ends."),
    ]
    train = load_pairs("activitynet", tmp_path, "train")
    val = load_pairs("activitynet", tmp_path, "val")
    assert len(val) == 1 and len(train) == 19 and _video_ids(train).isdisjoint(_video_ids(val))
    assert {p.clip.path.name for p in train + val} == {p.name for p in videos.iterdir() if p.is_file()} - {
        "v_test1.mkv"
    }


def test_activitynet_errors(tmp_path: Path) -> None:
    _write(tmp_path / "val_1.json", json.dumps({"v_gone": _activitynet_entry(0)}))
    (tmp_path / "videos").mkdir()
    with pytest.raises(DatasetError, match=r"val_1.json: no file for video 'v_gone'.*tried v_gone, gone, v_gone.mp4"):
        load_pairs("activitynet", tmp_path, "test")
    with pytest.raises(DatasetError, match=r"train.json: missing"):
        load_pairs("activitynet", tmp_path, "train")
    with pytest.raises(DatasetError, match="videos folder does not exist"):
        load_pairs("activitynet", tmp_path, "test", videos_dir="nowhere")
    _write(
        tmp_path / "val_1.json", json.dumps({"v_x": {"duration": 3, "timestamps": [[0, 1]], "sentences": ["a", "b"]}})
    )
    with pytest.raises(DatasetError, match=r"val_1.json: 'v_x'.timestamps: expected one \[start, end\] per sentence"):
        load_pairs("activitynet", tmp_path, "test")


# ----------------------------------------------------------------------------------------------- LSMDC


def _lsmdc_line(clip_id: str, sentence: str) -> str:
    """clip_id, start/end aligned, start/end extracted (times are not read), sentence."""
    return "\t".join([clip_id, "00.00.01.000", "00.00.02.000", "00.00.01.000", "00.00.02.000", sentence])


LSMDC_LINES = [
    _lsmdc_line("0001_American_Beauty_00.00.51.926-00.00.54.129", "SOMEONE looks up."),
    _lsmdc_line("0001_American_Beauty_00.01.02.000-00.01.05.500", "He walks\taway."),
    "",
    _lsmdc_line("3001_21_JUMP_STREET_00.00.01.553-00.00.03.524", "A car stops."),
]


def test_lsmdc_reads_tab_separated_clips(tmp_path: Path) -> None:
    _write(tmp_path / "LSMDC16_challenge_1000_publictect.csv", "\n".join(LSMDC_LINES) + "\n")
    pairs = load_pairs("lsmdc", tmp_path, "test", videos_dir="/lsmdc/avi")
    assert [p.caption for p in pairs] == ["SOMEONE looks up.", "He walks\taway.", "A car stops."]
    assert pairs[0].clip == ClipRef(
        "0001_American_Beauty_00.00.51.926-00.00.54.129",
        Path("/lsmdc/avi/0001_American_Beauty/0001_American_Beauty_00.00.51.926-00.00.54.129.avi"),
    )
    assert pairs[2].clip.path.parent.name == "3001_21_JUMP_STREET"
    assert lsmdc_movie("3001_21_JUMP_STREET_00.00.01.553-00.00.03.524") == "3001_21_JUMP_STREET"
    assert lsmdc_movie("no_time_suffix") is None


def test_lsmdc_split_files_and_errors(tmp_path: Path) -> None:
    _write(tmp_path / "LSMDC16_annos_training.csv", LSMDC_LINES[0] + "\n")
    _write(tmp_path / "LSMDC16_annos_val.csv", LSMDC_LINES[3] + "\n")
    assert len(load_pairs("lsmdc", tmp_path, "train")) == 1
    assert load_pairs("lsmdc", tmp_path, "val", ext=".mp4")[0].clip.path.suffix == ".mp4"
    with pytest.raises(DatasetError, match="LSMDC16_challenge_1000_publictect.csv: missing"):
        load_pairs("lsmdc", tmp_path, "test")
    _write(tmp_path / "LSMDC16_annos_training.csv", LSMDC_LINES[0] + "\nclip\t1\t2\t3\tonly five\n")
    with pytest.raises(DatasetError, match=r"LSMDC16_annos_training.csv:2: expected 6 tab-separated fields"):
        load_pairs("lsmdc", tmp_path, "train")
    _write(tmp_path / "LSMDC16_annos_training.csv", "movie_clip\t1\t2\t3\t4\tsentence\n")
    with pytest.raises(DatasetError, match=r"LSMDC16_annos_training.csv:1: clip_id 'movie_clip' does not end in"):
        load_pairs("lsmdc", tmp_path, "train")


# ------------------------------------------------------------------------------------------------ MSVD


def _msvd(root: Path) -> None:
    captions = {
        "vidA_1_5": [["a", "man", "plays", "guitar"], ["someone", "plays", "music"]],
        "vidB_3_9": [["a", "cat", "jumps"]],
        "vidC_0_4": [["a", "woman", "cooks"], ["food", "is", "cooked"], ["a", "lady", "is", "cooking"]],
    }
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    _write(root / "train_list.txt", "vidA_1_5\nvidB_3_9\n")
    _write(root / "val_list.txt", "vidB_3_9\n")
    _write(root / "test_list.txt", "vidC_0_4\nvidA_1_5\n")


def test_msvd_every_caption_is_a_pair_and_evaluated(tmp_path: Path) -> None:
    _msvd(tmp_path)
    train = load_pairs("msvd", tmp_path, "train")
    assert [p.caption for p in train] == ["a man plays guitar", "someone plays music", "a cat jumps"]
    assert train[0].clip == ClipRef("vidA_1_5", tmp_path / "videos" / "vidA_1_5.avi")
    assert len(load_pairs("msvd", tmp_path, "val")) == 1
    test = load_retrieval_set("msvd", tmp_path, "test")
    assert [c.video_id for c in test.clips] == ["vidC_0_4", "vidA_1_5"]
    assert test.captions[2] == "a lady is cooking"
    assert test.caption_clip == [0, 0, 0, 1, 1]


def test_msvd_errors(tmp_path: Path) -> None:
    _msvd(tmp_path)
    _write(tmp_path / "test_list.txt", "vidC_0_4\nvidZ\n")
    with pytest.raises(DatasetError, match=r"test_list.txt:2: video 'vidZ' has no captions in raw-captions.pkl"):
        load_pairs("msvd", tmp_path, "test")
    (tmp_path / "val_list.txt").unlink()
    with pytest.raises(DatasetError, match=r"val_list.txt: missing"):
        load_pairs("msvd", tmp_path, "val")
    # a pickle that names a class is refused before anything runs
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(collections.OrderedDict(vidA_1_5=[["x"]])))
    with pytest.raises(DatasetError, match=r"raw-captions.pkl: not a pickle of video id -> list of token lists"):
        load_pairs("msvd", tmp_path, "train")
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"vidA_1_5": [[1, 2]]}))
    with pytest.raises(DatasetError, match=r"raw-captions.pkl: 'vidA_1_5': expected a list of string tokens"):
        load_pairs("msvd", tmp_path, "train")


# ---------------------------------------------------------------------------------------------- common


def test_load_pairs_rejects_unknown_names(tmp_path: Path) -> None:
    _synth_like(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset layout 'webvid'; expected one of activitynet"):
        load_pairs("webvid", tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_pairs("jsonl", tmp_path, "dev")
    with pytest.raises(
        DatasetError, match="unknown option.*videos_dir for layout 'jsonl'; it takes: file, val_fraction, seed"
    ):
        load_pairs("jsonl", tmp_path, "test", videos_dir="x")
    with pytest.raises(DatasetError, match="does not exist"):
        load_pairs("msrvtt", tmp_path / "absent", "test")
    _write(tmp_path / "empty" / "captions.jsonl", "\n")
    with pytest.raises(DatasetError, match="test split of the jsonl dataset has no captions"):
        load_pairs("jsonl", tmp_path / "empty", "test")


def test_retrieval_set_groups_by_clip() -> None:
    a, b = ClipRef("a", Path("a.mp4")), ClipRef("a", Path("a.mp4"), 2.0, 4.0)
    rs = RetrievalSet.from_pairs([Pair(a, "one"), Pair(b, "two"), Pair(a, "three")])
    assert rs == RetrievalSet(clips=[a, b], captions=["one", "two", "three"], caption_clip=[0, 1, 0])
