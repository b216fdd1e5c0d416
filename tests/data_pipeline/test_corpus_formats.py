"""Text layouts at the seams: the last line of a file, paragraph files without blank lines."""
import pytest

from data_pipeline import corpus


def _docs(path, text_format, skips=None):
  return [(d.source.rsplit("/", 1)[-1], d.sentences)
          for d in corpus.iter_text_documents(str(path), text_format, skips)]


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n\n"])
def test_lines_format_reads_every_line_once(tmp_path, ending):
  # The last line used to be yielded twice (a 2-line file gave 3 documents).
  (tmp_path / "two.txt").write_bytes(("第一行。\n" + "second line." + ending).encode())
  assert _docs(tmp_path / "two.txt", "lines") == [("two.txt:1", ["第一行。"]),
                                                  ("two.txt:2", ["second line."])]


def test_paragraph_per_line_file_is_an_error_naming_it(tmp_path):
  # One paragraph per line, no blank line: "paragraphs" would make the file ONE document.
  (tmp_path / "wiki.txt").write_text("北京是中国的首都。它有很多名胜。\n"
                                     "上海是一座城市。\nParis is in France.\n")
  with pytest.raises(corpus.CorpusError, match=r"wiki\.txt: --text_format=paragraphs.*"
                     r"3 of its 3 lines end a sentence.*--text_format=lines"):
    _docs(tmp_path / "wiki.txt", "paragraphs")
  assert len(_docs(tmp_path / "wiki.txt", "lines")) == 3


def test_one_wrapped_paragraph_is_read_with_a_warning(tmp_path):
  # Hard-wrapped lines end mid-sentence: one paragraph, kept, but counted and warned about.
  (tmp_path / "wrapped.txt").write_text("这是一个很长的段落，它被\n换行了好几次，但是\n"
                                        "仍然是一个段落。\n")
  skips = corpus.SkipLog()
  with pytest.warns(UserWarning, match=r"wrapped\.txt: --text_format=paragraphs.*3 lines"):
    docs = _docs(tmp_path / "wrapped.txt", "paragraphs", skips)
  assert docs == [("wrapped.txt:1", ["这是一个很长的段落，它被换行了好几次，但是仍然是一个段落。"])]
  note = "note_paragraphs_format_file_without_blank_lines_read_as_one_document"
  assert skips.examples[note][0].endswith("wrapped.txt")


def test_paragraph_files_with_blank_lines_need_no_warning(tmp_path, recwarn):
  (tmp_path / "p.txt").write_text("One. Two.\nThree.\n\nFour.\n")
  assert _docs(tmp_path / "p.txt", "paragraphs") == [("p.txt:1", ["One.", "Two.", "Three."]),
                                                     ("p.txt:4", ["Four."])]
  assert not recwarn.list
