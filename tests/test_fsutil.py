

def test_read_json_object_is_none_for_anything_but_an_object(tmp_path):
    from bespoke.fsutil import read_json_object

    cases = {"ok.json": '{"stage": "done"}', "list.json": "[1, 2]", "junk.json": "{not json", "empty.json": ""}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert read_json_object(tmp_path / "ok.json") == {"stage": "done"}
    assert [read_json_object(tmp_path / n) for n in ("list.json", "junk.json", "empty.json", "missing.json")] == [None] * 4
    assert read_json_object(tmp_path) is None  # a folder where the file should be
