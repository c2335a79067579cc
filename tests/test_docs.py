"""The docs stay true: every flag they write exists in its command's parser, every link and repository path exists,
docs/arguments.md is what its generator writes, and the README's own-data command runs as written."""

import ast
import csv
import glob
import importlib.util
import os
import re
import shlex
import shutil

import pytest
from conftest import DATA_DIR, ROOT, read_json

import run_speech_recognition_ctc as ctc

README = os.path.join(ROOT, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
RECIPE = "run_speech_recognition_ctc.py"
# The commands whose flags the docs write, by how they are named: the recipe (run.sh and run_dist.sh pass their
# arguments on to it) and the argparse commands of the repository.
COMMAND = re.compile(r"(?<![\w/.-])(?:\./)?((?:tools/|bench/)?[\w-]+\.py|run\.sh|run_dist\.sh)(?![\w.-])")
SHELL_BREAK = re.compile(r"(?<!\\)(?:&&|\|\||;|\|)")  # not an escaped `\;` (an argument, as in --chars_to_ignore)
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`((?:[^`\n]|\n(?!\n))+)`")  # a code span may wrap onto the next line
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
IGNORED_TOP = {".git", ".venv", "outputs", "runs", ".pytest_cache", "__pycache__"}
# Files of other projects the docs name by file name.
EXTERNAL_FILES = {"run_speech_recognition_ctc_adapter.py"}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def argparse_flags(path: str) -> set:
    """The --flags an argparse command declares (every add_argument call's option strings), read from its source."""
    flags = {"--help"}
    for node in ast.walk(ast.parse(read(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def recipe_flags() -> set:
    """The recipe's flags: its parser's (its own fields and every TrainingArguments flag) and the old 4.x names."""
    flags = {option for option in ctc.build_parser()._option_string_actions if option.startswith("--")}
    return flags | {f"--{old}" for old in ctc.LEGACY_RENAMES}


@pytest.fixture(scope="module")
def parsers() -> dict:
    found = {RECIPE: recipe_flags()}
    found["run.sh"] = found["run_dist.sh"] = found[RECIPE] | {"--list", "--print"}
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "tools", "*.py")) + \
            glob.glob(os.path.join(ROOT, "bench", "*.py")):
        name = os.path.relpath(path, ROOT)
        if name != RECIPE:
            found[name] = argparse_flags(path)
    return found


def code_lines(text: str) -> list:
    """The lines of the fenced blocks (joined over backslash continuations) and the inline code spans."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    prose = FENCE.sub("", text)
    return lines + [span.replace("\n", " ") for span in SPAN.findall(prose)]


def prose_flags(text: str) -> list:
    """Flags written outside code."""
    return FLAG.findall(SPAN.sub("", FENCE.sub("", text)))


def written_flags(text: str) -> list:
    """(command or None, flag) for every flag in the code of a page. A flag after a command name is that command's;
    one in a shell segment that starts with another program (pip, torchrun before the command, git) is not ours;
    one in a segment naming no program (a bare `--flag`, a continuation line) is the page's."""
    found = []
    for line in code_lines(text):
        for segment in SHELL_BREAK.split(line):
            words = segment.split()
            if not words:
                continue
            commands = list(COMMAND.finditer(segment))
            if not commands:
                if words[0].startswith("--") or words[0] in ("...", "…"):
                    found += [(None, flag) for flag in FLAG.findall(segment)]
                continue
            for i, match in enumerate(commands):
                end = commands[i + 1].start() if i + 1 < len(commands) else len(segment)
                found += [(match.group(1), flag) for flag in FLAG.findall(segment[match.end():end])]
    return found + [(None, flag) for flag in prose_flags(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_flag_the_docs_write_exists_in_its_command(page, parsers):
    text = read(page)
    named = {m.group(1) for m in COMMAND.finditer(text) if m.group(1) in parsers}
    page_flags = set().union(parsers[RECIPE], *(parsers[name] for name in named))
    wrong = []
    for command, flag in written_flags(text):
        flag = "--" + flag.split("=")[0]
        if command is None:
            if flag not in page_flags:
                wrong.append(f"{flag} (no command on the page has it)")
        elif command in EXTERNAL_FILES:
            continue
        elif command not in parsers:
            wrong.append(f"{command} (no such command in the repository)")
        elif flag not in parsers[command]:
            wrong.append(f"{command} {flag}")
    assert not wrong, f"{os.path.relpath(page, ROOT)}: flags that do not exist: {sorted(set(wrong))}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: str) -> set:
    """Every anchor a markdown file has (repeated headings get -1, -2, ... as on GitHub)."""
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", read(path)), re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", read(page))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            broken.append(f"{target} (no such file)")
        elif anchor and (not full.endswith(".md") or anchor not in anchors(full)):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{os.path.relpath(page, ROOT)}: broken links: {broken}"


def repository_files() -> set:
    """Every file and folder of the checkout (relative paths), outside the ignored folders."""
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in IGNORED_TOP]
        rel = os.path.relpath(folder, ROOT)
        found |= {os.path.normpath(os.path.join(rel, name)) for name in dirs + files}
    return found


def path_pattern(token: str) -> str | None:
    """A backticked token as a repository path pattern (placeholders in capitals become *), or None if it is not one
    (a user's path, a file of an output folder, a module name)."""
    token = token.split("::")[0].strip("()[],;:.'\"").rstrip("/")
    if not re.fullmatch(r"[\w.*/-]+", token) or token.startswith(("/", "~", ".")):
        return None
    top = sorted({name for name in os.listdir(ROOT) if name not in IGNORED_TOP})
    first = token.split("/")[0]
    if first not in top and not ("/" not in token and token.endswith((".py", ".sh"))):
        return None
    parts = ["*" if re.fullmatch(r"[A-Z][A-Z0-9_]*", p) else re.sub(r"\b[A-Z][A-Z0-9_]{1,}\b", "*", p)
             for p in token.split("/")]
    return "/".join(parts)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_repository_path_the_docs_name_exists(page):
    files = repository_files()
    names = {os.path.basename(f) for f in files}
    missing = []
    for line in code_lines(read(page)):
        for token in line.split():
            pattern = path_pattern(token)
            if pattern is None or pattern in EXTERNAL_FILES:
                continue
            if "/" not in pattern and "*" not in pattern:
                found = pattern in names
            else:
                found = bool(glob.glob(os.path.join(ROOT, pattern)))
            if not found:
                missing.append(token)
    assert not missing, f"{os.path.relpath(page, ROOT)}: paths that do not exist: {sorted(set(missing))}"


def test_the_arguments_page_is_what_its_generator_writes():
    spec = importlib.util.spec_from_file_location("make_arguments_doc", os.path.join(ROOT, "tools",
                                                                                      "make_arguments_doc.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert read(os.path.join(ROOT, "docs", "arguments.md")) == generator.render(), \
        "docs/arguments.md is stale: run python tools/make_arguments_doc.py"


DEMO_COMMAND = "pip install -r requirements.txt && python run_speech_recognition_ctc.py examples/demo.json"
TEST_COMMAND = ("pip install -r requirements.txt pytest pytest-xdist && "
                "python -m pytest -q -n auto --dist loadfile tests")


def test_the_readme_is_a_front_door():
    """At most 15,000 characters, the demo and test commands as they were, and CI runs the README's test command."""
    text = read(README)
    assert len(text.encode()) <= 15000
    assert DEMO_COMMAND in text and TEST_COMMAND in text
    assert TEST_COMMAND in read(os.path.join(ROOT, ".ci", "run"))
    for page in PAGES[1:]:
        assert f"docs/{os.path.basename(page)}" in text, f"the README does not link {os.path.basename(page)}"


def readme_section(title: str) -> str:
    text = read(README)
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def own_data_command() -> list:
    """The README's own-data command, as the shell would split it."""
    section = readme_section("Fine-tune on your own data")
    commands = [block for block in FENCE.findall(section) if RECIPE in block]
    assert len(commands) == 1, "the own-data section should hold exactly one training command"
    argv = shlex.split(commands[0].replace("\\\n", " "), comments=True)  # backslash-newline: one line
    assert argv[:2] == ["python", RECIPE]
    return argv[2:]


def replace_value(argv: list, flag: str, value: str) -> list:
    assert argv.count(flag) == 1, f"the own-data command should pass {flag} once"
    i = argv.index(flag)
    return argv[:i + 1] + [value] + argv[i + 2:]


def test_the_readme_own_data_command_runs_as_written(tmp_path, encoder_dir):
    """The command, taken from the README, on a train/ + test/ folder laid out as the README shows it, with the
    model id replaced by a tiny local checkpoint of the same shape, on CPU, for two steps."""
    section = readme_section("Fine-tune on your own data")
    header = next(block for block in FENCE.findall(section) if block.startswith("file_name")).splitlines()[0]
    columns = header.split(",")
    corpus = tmp_path / "my_corpus"
    for split in ("train", "test"):
        os.makedirs(corpus / split)
        with open(os.path.join(DATA_DIR, split, "metadata.csv"), encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        with open(corpus / split / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in rows:
                shutil.copy(os.path.join(DATA_DIR, split, row["file_name"]), corpus / split)
                writer.writerow([row["file_name"] if c == "file_name" else row["sentence"] for c in columns])
    argv = own_data_command()
    argv = replace_value(argv, "--model_name_or_path", encoder_dir)
    argv = replace_value(argv, "--dataset_name", str(corpus))
    argv = replace_value(argv, "--output_dir", str(tmp_path / "out"))
    precision = [flag for flag in ("--fp16", "--bf16") if flag in argv]
    assert len(precision) == 1, "the own-data command trains in --fp16 or --bf16 on a GPU"
    argv.remove(precision[0])
    ctc.main(argv + ["--use_cpu", "--max_steps", "2", "--dataloader_num_workers", "0", "--report_to", "none"])
    results = read_json(tmp_path / "out" / "all_results.json")
    # Every clip of both folders was used: the 12 trained on and the 4 scored (a random model's WER can be any size)
    assert results["train_samples"] == 12 and results["eval_samples"] == 4 and results["eval_wer"] >= 0
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")


def test_the_checks_find_a_wrong_flag_a_broken_link_and_a_missing_path(tmp_path, parsers):
    """The checkers themselves, on a page written to fail them: a flag given to the wrong command, a bare flag no
    command has, a launcher's flag (fine), a link to a missing heading, a repository path that does not exist."""
    page = ("# Title\n\n## A section\n\n```bash\ntorchrun --nproc_per_node 2 run_speech_recognition_ctc.py --do_train"
            " \\; \\\n  --batch_seconds 5\npip install --no-deps x && python transcribe.py out a.wav --lm\n```\n\n"
            "Use `--no_such_flag`, see [this](#a-section), [that](#no-section) and `tools/no_such_tool.py`.\n")
    flags = written_flags(page)
    assert (RECIPE, "batch_seconds") in flags and ("transcribe.py", "lm") in flags and (None, "no_such_flag") in flags
    assert not any(flag in ("nproc_per_node", "no-deps") for _, flag in flags)
    assert "--batch_seconds" not in parsers[RECIPE] and "--batch_seconds" in parsers["transcribe.py"]
    (tmp_path / "page.md").write_text(page)
    assert anchors(str(tmp_path / "page.md")) == {"title", "a-section"}  # so #no-section is reported
    assert slug("Fine-tune on your own data") == "fine-tune-on-your-own-data"
    assert slug("`--lm` (n-grams)") == "--lm-n-grams"
    assert path_pattern("tools/no_such_tool.py") == "tools/no_such_tool.py" and path_pattern("/data/x.py") is None
    assert path_pattern("OUTPUT_DIR/report.html") is None and path_pattern("bench/results/NAME/RUN.json") == \
        "bench/results/*/*.json"
