"""A catalogue of hostile inputs, faults and odd environments, generated small (test_hostile.py).

Each case writes what it needs into a fresh folder and names the command to run; the test asserts
one clear line on stderr naming the file, the exit code, no traceback and no half-written table.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

GOOD = "Interviewer: How did the project start?\nP01: We began with a small pilot on two wards.\n" \
       "Interviewer: And then?\nP01: Then the whole unit joined, once the data showed it worked.\n"


@dataclass
class Case:
    name: str
    family: str
    build: Callable[[Path], list[str]]  # writes files under the folder, returns the CLI arguments
    code: int = 2                       # expected exit code
    names: str | None = None            # text the error line must contain (usually the file)
    skip_bad_ok: bool = False           # with --skip-bad the run succeeds and lists the file as rejected
    root_skip: bool = False             # meaningless as root (permissions)
    extra: dict = field(default_factory=dict)


def _corpus(folder: Path, files: dict[str, bytes | str]) -> Path:
    corpus = folder / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "ok.txt").write_text(GOOD, encoding="utf-8")
    for name, content in files.items():
        path = corpus / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return corpus


def _segment(files: dict[str, bytes | str], *extra: str):
    def build(folder: Path) -> list[str]:
        return ["segment", str(_corpus(folder, files)), "--out", str(folder / "run"), *extra]
    return build


def _docx(document_xml: bytes, extra_members: dict[str, bytes] | None = None) -> bytes:
    """A real Word package (python-docx's template) with its document.xml replaced."""
    import docx

    src = io.BytesIO()
    docx.Document().save(src)
    out = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item, document_xml if item.filename == "word/document.xml" else zin.read(item))
        for k, v in (extra_members or {}).items():
            zout.writestr(k, v)
    return out.getvalue()


def _docx_without(member: str) -> bytes:
    """A real Word package with one of its parts left out (a copy cut short by some other tool)."""
    full = zipfile.ZipFile(io.BytesIO(_docx(_docx_body("P01: hello there"))))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in full.infolist():
            if item.filename != member:
                zout.writestr(item, full.read(item))
    return out.getvalue()


def _docx_body(text: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
            f'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>'
            ).encode("utf-8")


def _nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _manifest(rows: str, files: dict[str, str] | None = None):
    def build(folder: Path) -> list[str]:
        corpus = _corpus(folder, files or {})
        (corpus / "manifest.csv").write_text("file,interview_id,wave\n" + rows, encoding="utf-8")
        return ["segment", str(corpus), "--out", str(folder / "run")]
    return build


def _semicolon_manifest(folder: Path) -> list[str]:
    corpus = _corpus(folder, {})
    (corpus / "manifest.csv").write_text("file;interview_id;wave\nok.txt;i1;1\n", encoding="utf-8")
    return ["segment", str(corpus), "--out", str(folder / "run")]


def _speakers(rows: str):
    def build(folder: Path) -> list[str]:
        corpus = _corpus(folder, {})
        (corpus / "speakers.csv").write_text("speaker_id,role,is_interviewer\n" + rows, encoding="utf-8")
        return ["segment", str(corpus), "--out", str(folder / "run")]
    return build


def _config(text: str | bytes, as_folder: bool = False):
    def build(folder: Path) -> list[str]:
        corpus = _corpus(folder, {})
        cfg = folder / "bad.toml"
        if as_folder:
            cfg.mkdir()
        else:
            cfg.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return ["segment", str(corpus), "--out", str(folder / "run"), "--config", str(cfg)]
    return build


def _framework(text: str | bytes):
    """`run --until segment --framework F`: the framework is validated before any stage starts."""
    def build(folder: Path) -> list[str]:
        corpus = _corpus(folder, {})
        fw = folder / "framework.yaml"
        fw.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return ["run", str(corpus), "--out", str(folder / "run"), "--framework", str(fw), "--until", "segment"]
    return build


FRAMEWORK_OK = """name: f
dimensions:
  - id: a
    name: A
    concepts:
      - id: a1
        name: A one
        descriptions: [one]
  - id: b
    name: B
    concepts:
      - id: b1
        name: B one
        descriptions: [two]
"""


def _deep_yaml(depth: int) -> str:
    return "name: x\ndimensions: " + "[" * depth + "]" * depth + "\n"


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    # ---- transcripts
    add(Case("empty file", "transcript", _segment({"empty.txt": b""}), names="empty.txt", skip_bad_ok=True))
    add(Case("binary file", "transcript", _segment({"img.txt": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4}),
             names="img.txt", skip_bad_ok=True))
    add(Case("no speaker labels", "transcript", _segment({"plain.txt": "just some words\nand more words\n"}),
             names="plain.txt", skip_bad_ok=True))
    add(Case("whitespace only", "transcript", _segment({"blank.txt": " \n\t\n  \n"}), names="blank.txt",
             skip_bad_ok=True))
    add(Case("json nested 10000 deep", "transcript", _segment({"deep.json": _nested_json(10_000)}),
             names="deep.json", skip_bad_ok=True))
    add(Case("json start 'soon'", "transcript",
             _segment({"soon.json": json.dumps([{"speaker": "P01", "text": "Hello there.", "start": "soon"}])}),
             names="soon.json", skip_bad_ok=True))
    add(Case("json start a list", "transcript",
             _segment({"list.json": json.dumps([{"speaker": "P01", "text": "Hello there.", "start": [1, 2]}])}),
             names="list.json", skip_bad_ok=True))
    add(Case("json a number", "transcript", _segment({"num.json": "42"}), names="num.json", skip_bad_ok=True))
    add(Case("json syntax error", "transcript", _segment({"broken.json": '[{"speaker": "P01", "text": '}),
             names="broken.json", skip_bad_ok=True))
    add(Case("json text not a string", "transcript",
             _segment({"obj.json": json.dumps([{"speaker": "P01", "text": {"a": 1}}])}), names="obj.json",
             skip_bad_ok=True))
    add(Case("json speaker missing", "transcript", _segment({"nospk.json": json.dumps([{"text": "Hello."}])}),
             names="nospk.json", skip_bad_ok=True))
    add(Case("docx not a zip", "transcript", _segment({"fake.docx": b"this is not a zip file at all"}),
             names="fake.docx", skip_bad_ok=True))
    add(Case("docx without its document part", "transcript", _segment({"part.docx": _docx_without("word/document.xml")}),
             names="part.docx: not a complete Word document: the archive has no word/document.xml", skip_bad_ok=True))
    add(Case("docx without its styles part", "transcript", _segment({"styles.docx": _docx_without("word/styles.xml")}),
             names="styles.docx: not a complete Word document", skip_bad_ok=True))
    add(Case("docx of 60,000 paragraphs", "transcript", _segment({"big.docx": _docx(
        b'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
        b'wordprocessingml/2006/main"><w:body>' + b"<w:p><w:r><w:t>P01: a</w:t></w:r></w:p>" * 60_000
        + b"</w:body></w:document>")}), code=0, names="big.docx: 60,000 paragraphs, far more than an interview"))
    add(Case("docx malformed xml", "transcript", _segment({"bad.docx": _docx(b"<w:document><w:body><w:p>")}),
             names="bad.docx", skip_bad_ok=True))
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;'
            '&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'
            '&lol2;">]><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            '<w:body><w:p><w:r><w:t>P01: &lol3;</w:t></w:r></w:p></w:body></w:document>').encode()
    add(Case("docx entity bomb", "transcript", _segment({"bomb.docx": _docx(bomb)}), names="bomb.docx",
             skip_bad_ok=True))
    add(Case("docx zip bomb", "transcript",
             _segment({"zipbomb.docx": _docx(_docx_body("P01: hello"), {"word/huge.bin": b"\0" * 300_000_000})}),
             names="zipbomb.docx", skip_bad_ok=True))
    add(Case("docx 10 MB text node", "transcript",
             _segment({"huge.docx": _docx(_docx_body("P01: " + "word " * 2_200_000))}), names="huge.docx",
             skip_bad_ok=True))
    add(Case("docx without document.xml", "transcript",
             _segment({"nodoc.docx": _zip({"word/other.xml": b"<x/>"})}), names="nodoc.docx", skip_bad_ok=True))
    add(Case("vtt without cues", "transcript", _segment({"empty.vtt": "WEBVTT\n\n"}), names="empty.vtt",
             skip_bad_ok=True))
    add(Case("srt garbage", "transcript", _segment({"junk.srt": "1\nnot a time\n\n\x00\x01\x02"}), names="junk.srt",
             skip_bad_ok=True))
    add(Case("utf-16 without bom", "transcript", _segment({"u16.txt": "P01: hello there\n".encode("utf-16-le")}),
             code=0, names="u16.txt: read as UTF-16-LE text without a byte-order mark"))
    add(Case("utf-16 big-endian without bom", "transcript",
             _segment({"u16be.txt": "Interviewer: Why?\nP01: Because it worked.\n".encode("utf-16-be")}),
             code=0, names="u16be.txt: read as UTF-16-BE"))
    add(Case("one line of 5 MB", "transcript",
             _segment({"long.txt": "P01: " + "This is a sentence that goes on. " * 160_000 + "\n"}), code=0,
             names="long.txt"))
    add(Case("NUL and control characters", "transcript",
             _segment({"nul.txt": "Interviewer: Why?\nP01: Because\x00 it\x07 worked.\n"}), code=0,
             names="nul.txt:2"))
    add(Case("one cp1252 line among UTF-8", "transcript",
             _segment({"mixed.txt": "P01: caf\u00e9 first.\n".encode() + b"P01: na\xefve second.\n"
                       + "P01: r\u00e9sum\u00e9 third.\n".encode()}), code=0, names="mixed.txt:2"))
    add(Case("vtt cue with a malformed timing line", "transcript",
             _segment({"cues.vtt": "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v INT>First question?\n\n"
                       "00:00:03.000 -> 00:00:04\n<v P01>An answer.\n\n00:00:05.000 --> 00:00:06.000\n"
                       "<v INT>Second question?\n"}), code=0, names="cues.vtt:6"))
    add(Case("vtt timestamps out of range", "transcript",
             _segment({"late.vtt": "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v INT>First question?\n\n"
                       "99:99:99.999 --> 99:99:99.999\n<v P01>An answer.\n"}), code=0,
             names="late.vtt:6: 1 cue(s) with a malformed or impossible timing line"))
    add(Case("unreadable file", "transcript", _unreadable, names="locked.txt", code=3, skip_bad_ok=True,
             root_skip=True))
    add(Case("symlink out of the folder", "transcript", _symlink_out, names="link.txt", skip_bad_ok=True))
    add(Case("symlink loop", "transcript", _symlink_loop,
             names="loop.txt: symbolic link loop: the link leads back to itself", skip_bad_ok=True))
    add(Case("dangling symlink", "transcript", _dangling, names="gone.txt: broken symbolic link: its target",
             skip_bad_ok=True))
    # ---- metadata
    add(Case("manifest with an unbalanced quote", "metadata", _manifest('ok.txt,i1,1\n"x.txt,i2,2\n'),
             names="manifest.csv:3: a quoted field opened here is never closed"))
    add(Case("file name with a line break", "transcript", _segment({"a\nb.txt": GOOD}),
             names="a\\nb.txt: the file name holds a line break", skip_bad_ok=True))
    add(Case("manifest separated by semicolons", "metadata", _semicolon_manifest,
             names="manifest.csv:1: manifest needs a 'file' column (its columns are separated by ';' or tabs"))
    add(Case("manifest wave not a number", "metadata", _manifest("ok.txt,i1,first\n"), names="manifest.csv:2"))
    add(Case("manifest wave 10**30", "metadata", _manifest(f"ok.txt,i1,{10**30}\n"), names="manifest.csv:2"))
    add(Case("manifest wave negative", "metadata", _manifest("ok.txt,i1,-3\n"), names="manifest.csv:2"))
    add(Case("manifest path outside the folder", "metadata", _manifest_outside("../outside.txt"),
             names="manifest.csv:2"))
    add(Case("manifest absolute path", "metadata", _manifest_outside("ABSOLUTE"), names="manifest.csv:2"))
    add(Case("manifest lists a missing file", "metadata", _manifest("ok.txt,i1,1\ngone.txt,i2,1\n"),
             names="manifest.csv:3"))
    add(Case("manifest one file under two ids", "metadata", _manifest("ok.txt,i1,1\nok.txt,i2,1\n"),
             names="manifest.csv:3"))
    add(Case("manifest without file column", "metadata", _raw_manifest("interview_id,wave\ni1,1\n"),
             names="manifest.csv"))
    add(Case("manifest binary", "metadata", _raw_manifest(b"\x00\x01\x02\xff\xfe" * 50), names="manifest.csv"))
    add(Case("speaker listed twice with two roles", "metadata",
             _speakers("P01,CORE,false\nP01,PROJECT,false\n"), names="speakers.csv:3"))
    add(Case("speakers is_interviewer not a boolean", "metadata", _speakers("P01,CORE,maybe\n"),
             names="speakers.csv:2"))
    # ---- frameworks
    add(Case("framework nested 10000 deep", "framework", _framework(_deep_yaml(10_000)), names="framework.yaml"))
    add(Case("framework duplicate key", "framework",
             _framework(FRAMEWORK_OK.replace("name: f\n", "name: f\nname: g\n")), names="framework.yaml:2"))
    add(Case("framework duplicate concept id", "framework",
             _framework(FRAMEWORK_OK.replace("id: b1", "id: a1")), names="framework.yaml"))
    add(Case("framework one dimension", "framework",
             _framework(FRAMEWORK_OK.split("  - id: b")[0]), names="framework.yaml"))
    add(Case("framework empty", "framework", _framework(""), names="framework.yaml"))
    add(Case("framework binary", "framework", _framework(b"\xff\xfe\x00\x01garbage"), names="framework.yaml"))
    add(Case("framework yaml syntax", "framework", _framework("name: [unclosed\n"), names="framework.yaml"))
    add(Case("framework python tag", "framework",
             _framework("name: !!python/object/apply:os.system ['echo hi']\n"), names="framework.yaml"))
    add(Case("framework alias bomb", "framework", _framework(_alias_bomb()), names="framework.yaml"))
    # ---- configs
    add(Case("config negative seed", "config", _config("[run]\nseed = -1\n"), names="bad.toml"))
    add(Case("config umap_components 0", "config", _config("[codes]\numap_components = 0\n"), names="bad.toml"))
    add(Case("config unknown device", "config", _config('[embed]\ndevice = "tpu9"\n'), names="bad.toml"))
    add(Case("config unknown fallback encoding", "config", _config('[input]\nfallback_encoding = "klingon-8"\n'),
             names="bad.toml"))
    add(Case("config is a folder", "config", _config("", as_folder=True), names="bad.toml"))
    add(Case("config not toml", "config", _config("this is = = not toml"), names="bad.toml"))
    add(Case("config binary", "config", _config(b"\xff\xfe\x00garbage"), names="bad.toml"))
    add(Case("config unknown key", "config", _config("[run]\nspeed = 3\n"), names="bad.toml"))
    add(Case("config wrong type", "config", _config('[run]\nseed = "one"\n'), names="bad.toml"))
    add(Case("config bootstrap negative", "config", _config("[shift]\nbootstrap = -5\n"), names="bad.toml"))
    add(Case("config alpha out of range", "config", _config("[shift]\nalpha = 1.5\n"), names="bad.toml"))
    add(Case("config batch size 0", "config", _config("[embed]\nbatch_size = 0\n"), names="bad.toml"))
    add(Case("config ci_level 1", "config", _config("[compare]\nci_level = 1.0\n"), names="bad.toml"))
    add(Case("config nan threshold", "config", _config("[map]\ncode_threshold = nan\n"),
             names="bad.toml: map.code_threshold must be a finite number, got nan"))
    add(Case("config infinite alpha", "config", _config("[shift]\nalpha = inf\n"),
             names="bad.toml: shift.alpha must be a finite number, got inf"))
    add(Case("ray cluster unreachable", "environment", _segment({}, "--engine", "ray", "--address", "127.0.0.1:1"),
             code=3, names="cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused)"))
    add(Case("ray cluster unknown host", "environment",
             _segment({}, "--engine", "ray", "--address", "nosuchhost.invalid:6379"),
             code=3, names="cannot reach the Ray cluster at nosuchhost.invalid:6379 (unknown host)"))
    add(Case("config no permutations", "config", _config("[shift]\npermutations = 0\n"),
             names="bad.toml: shift.permutations must be from 100"))
    add(Case("config ten bootstrap replicates", "config", _config("[shift]\nbootstrap = 10\n"),
             names="bad.toml: shift.bootstrap must be 0 (no intervals) or at least 100, got 10"))
    # ---- environment
    add(Case("--out is an existing file", "environment", _out_is_file, code=3, names="taken"))
    add(Case("read-only output folder", "environment", _read_only_out, code=3, names="readonly",
             root_skip=True))
    add(Case("input folder missing", "environment", lambda f: ["segment", str(f / "nowhere"), "--out",
                                                               str(f / "run")], names="nowhere"))
    add(Case("input is a file", "environment", _input_is_file, names="single.txt"))
    return c


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def _alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\nname: x\n"


def _unreadable(folder: Path) -> list[str]:
    corpus = _corpus(folder, {"locked.txt": GOOD})
    (corpus / "locked.txt").chmod(0)
    return ["segment", str(corpus), "--out", str(folder / "run")]


def _symlink_out(folder: Path) -> list[str]:
    secret = folder / "secret.txt"
    secret.write_text("P09: my private words outside the corpus.\nP09: more of them.\n", encoding="utf-8")
    corpus = _corpus(folder, {})
    (corpus / "link.txt").symlink_to(secret)
    return ["segment", str(corpus), "--out", str(folder / "run")]


def _symlink_loop(folder: Path) -> list[str]:
    corpus = _corpus(folder, {})
    (corpus / "loop.txt").symlink_to(corpus / "loop.txt")
    return ["segment", str(corpus), "--out", str(folder / "run")]


def _dangling(folder: Path) -> list[str]:
    corpus = _corpus(folder, {})
    (corpus / "gone.txt").symlink_to(corpus / "moved_away.txt")
    return ["segment", str(corpus), "--out", str(folder / "run")]


def _manifest_outside(target: str):
    def build(folder: Path) -> list[str]:
        outside = folder / "outside.txt"
        outside.write_text(GOOD, encoding="utf-8")
        corpus = _corpus(folder, {})
        path = str(outside) if target == "ABSOLUTE" else target
        (corpus / "manifest.csv").write_text(f"file,interview_id,wave\n{path},i9,1\nok.txt,i1,1\n", encoding="utf-8")
        return ["segment", str(corpus), "--out", str(folder / "run")]
    return build


def _raw_manifest(content: str | bytes):
    def build(folder: Path) -> list[str]:
        corpus = _corpus(folder, {})
        (corpus / "manifest.csv").write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return ["segment", str(corpus), "--out", str(folder / "run")]
    return build


def _out_is_file(folder: Path) -> list[str]:
    corpus = _corpus(folder, {})
    (folder / "taken").write_text("not a folder", encoding="utf-8")
    return ["segment", str(corpus), "--out", str(folder / "taken")]


def _read_only_out(folder: Path) -> list[str]:
    corpus = _corpus(folder, {})
    out = folder / "readonly"
    out.mkdir()
    out.chmod(0o555)
    return ["segment", str(corpus), "--out", str(out / "run")]


def _input_is_file(folder: Path) -> list[str]:
    path = folder / "single.txt"
    path.write_text(GOOD, encoding="utf-8")
    return ["segment", str(path), "--out", str(folder / "run")]
