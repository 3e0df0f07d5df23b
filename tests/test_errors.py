import pickle

from groundkit.errors import FormatError


def test_format_error_message_names_file_item_and_field():
    err = FormatError("a.json", "expected an id", item="annotation 3", field="category_id")
    assert str(err) == "a.json: annotation 3: field 'category_id': expected an id"


def test_format_error_survives_pickling_whole():
    """A worker process's error reaches the parent with its message and parts."""
    err = FormatError("a.json", "expected an id", item="annotation 3", field="category_id")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, FormatError)
    assert (str(back), back.file, back.item, back.field) == (str(err), "a.json", "annotation 3",
                                                             "category_id")
