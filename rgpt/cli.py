"""The `rgpt` command. The pipeline itself runs with `make pipeline` / `dvc repro`; these are the
things a person does by hand around it: switch profiles, fetch or synthesise data, look at it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import paths
from .config import PARAMS_FILE, PROFILES, load_params, set_profile

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Fetch, synthesise and inspect the raw corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")
recap_app = typer.Typer(help="RecapD region captions (the recap stage).", no_args_is_help=True)
app.add_typer(recap_app, name="recap")
console = Console()


@app.command()
def profile(name: Optional[str] = typer.Argument(None, help=f"one of {', '.join(PROFILES)}; omit to show the active one"),
            params: Path = typer.Option(PARAMS_FILE, help="the params file to read or change")) -> None:
    """Show or switch the active profile (embedded: synthetic corpus on CPU; paper: real data on GPUs).

    Switching rewrites only the `profile:` line of params.yaml; `dvc repro` then reruns what it affects.
    """
    if name is None:
        console.print(load_params(params).profile)
        return
    try:
        set_profile(name, params)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    console.print(f"profile: [bold]{name}[/bold] (in {params}); run `make pipeline` to rebuild")


@app.command(name="eval")
def eval_(benchmark: list[str] = typer.Argument(..., help="classification | captioning | rec | pope (one or more)"),
          model: str = typer.Option("models/stage2", help="a saved RGPT folder, or an MLflow URI such as models:/rgpt/3"),
          out: Path = typer.Option(Path("outputs/eval"), help="results folder: <benchmark>/<part>.jsonl, metrics.json, "
                                                                "report.md; rerunning resumes from the results there"),
          max_questions: Optional[int] = typer.Option(None, help="ask at most this many questions per benchmark part"),
          params: Path = typer.Option(PARAMS_FILE, help="the params file (evaluate section, data root)")) -> None:
    """Run benchmarks on a model: batched generation with a progress bar, every prediction written
    beside its ground truth, metrics printed and saved. The pipeline's `evaluate` stage runs all four."""
    import json

    from .eval.stages import evaluate, write_reports

    settings = load_params(params)
    if max_questions is not None:
        evaluate_params = settings.evaluate.model_copy(update={"max_questions": max_questions})
        settings = settings.model_copy(update={"evaluate": evaluate_params})
    try:
        metrics, figures = evaluate(settings, model, benchmark, out_dir=out)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from None
    write_reports(metrics, figures, settings, model, reports=out)
    console.print_json(json.dumps(metrics, default=str))
    console.print(f"results in {out}/ (report.md, metrics.json, one .jsonl of predictions per benchmark part)")


@app.command()
def chat(question: str = typer.Argument(..., help='e.g. "What is in <region>?" (one <region> per --box/--mask)'),
         model: Path = typer.Option(..., help="a trained RGPT folder, e.g. models/stage2"),
         image: Path = typer.Option(..., help="the image to ask about"),
         box: list[str] = typer.Option([], help="a region as x1,y1,x2,y2 in image pixels; repeatable"),
         mask: list[Path] = typer.Option([], help="a region as a PNG mask of the image's size (non-zero = inside); "
                                                  "repeatable, after the boxes"),
         max_new_tokens: int = typer.Option(64)) -> None:
    """Ask the model about regions of an image. Regions fill the <region> placeholders in order:
    the --box ones first, then the --mask ones."""
    from PIL import Image

    from .data.templates import REGION
    from .model.inference import Request, answer
    from .model.loading import load_model
    from .user_regions import image_question, parse_box, read_mask

    pil = Image.open(image).convert("RGB")
    try:
        regions = [parse_box(b, *pil.size) for b in box] + [read_mask(m, *pil.size) for m in mask]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if question.count(REGION) != len(regions):
        raise typer.BadParameter(f"the question has {question.count(REGION)} {REGION} placeholders "
                                 f"but {len(regions)} regions were given (--box/--mask)")
    question = image_question(question)
    rgpt, processor = load_model(model)
    console.print(answer(rgpt, processor, [Request(pil, [(question, None)], regions)], max_new_tokens=max_new_tokens)[0])


@data_app.command("synth")
def data_synth(out: Path = typer.Argument(..., help="folder to write the corpus into (must be empty or absent)"),
               seed: Optional[int] = typer.Option(None, help="override synthetic.seed"),
               scale: float = typer.Option(1.0, help="multiply every image count by this")) -> None:
    """Write the synthetic twin corpus (every dataset's real on-disk format) to OUT."""
    from .embedded.synthetic.corpus import write_corpus

    if out.exists() and any(out.iterdir()):
        raise typer.BadParameter(f"{out} is not empty")
    params = load_params().synthetic.scaled(scale)
    if seed is not None:
        params = params.model_copy(update={"seed": seed})
    counts = write_corpus(out, params)
    console.print(f"wrote {sum(counts.values())} images/questions to {out}: {counts}")


@data_app.command("fetch")
def data_fetch(sources: Optional[list[str]] = typer.Argument(None, help="registry names; default: download.sources"),
               images: bool = typer.Option(True, help="also fetch the image archives (~150 GB in all)")) -> None:
    """Download, verify and unpack real sources into data.root (resumable; set HF_TOKEN for the hub)."""
    from .data.download import fetch_all

    p = load_params()
    fetched = fetch_all(sources or p.download.sources, p.data.root, images=images,
                        retries=p.download.retries, timeout_s=p.download.timeout_s)
    for name, files in fetched.items():
        console.print(f"{name}: {', '.join(str(x) for x in files)}")


@data_app.command("stats")
def data_stats(root: Optional[Path] = typer.Option(None, help="data root; default: data.root from params.yaml")) -> None:
    """Images, regions, relations and categories of every dataset split under the data root."""
    from .data.formats import SPLITS, read_split

    root = root or load_params().data.root
    table = Table("dataset", "split", "images", "regions", "relations", "captions", "categories")
    for dataset, splits in SPLITS.items():
        for split in splits:
            s = read_split(root, dataset, split)
            table.add_row(dataset, split, str(len(s.records)), str(sum(len(r.regions) for r in s.records)),
                          str(sum(len(r.relations) for r in s.records)), str(sum(len(r.captions) for r in s.records)),
                          str(len(s.categories)))
    console.print(table)


@data_app.command("show")
def data_show(dataset: str = typer.Argument(..., help="v3det | vg | coco | lvis | refcocog | llava"),
              split: str = typer.Argument(..., help="train | val | test"),
              index: int = typer.Option(0, help="which image of the split"),
              out: Path = typer.Option(Path("show.png"), help="PNG to write"),
              root: Optional[Path] = typer.Option(None, help="data root; default: data.root")) -> None:
    """Draw one image with its regions (masks, boxes, labels) to a PNG."""
    from .data.formats import read_split
    from .data.show import draw_record

    root = root or load_params().data.root
    records = read_split(root, dataset, split).records
    if not 0 <= index < len(records):
        raise typer.BadParameter(f"{dataset}/{split} has {len(records)} images; index {index} is out of range")
    draw_record(records[index], root).save(out)
    console.print(f"{records[index].key} -> {out}")


@recap_app.command("stats")
def recap_stats(captions: Path = typer.Option(paths.CAPTIONS, help="the recap stage's captions"),
                metrics: Path = typer.Option(paths.stage_reports("recap") / "metrics.json",
                                             help="the recap stage's metrics"),
                filtered: Path = typer.Option(paths.KEPT, help="the captions clip_filter kept (shown when present)"),
                filter_metrics: Path = typer.Option(paths.stage_reports("clip_filter") / "metrics.json",
                                                    help="the clip_filter stage's metrics (shown when present)"),
                bins: int = typer.Option(10, help="bars in the words-per-caption histogram")) -> None:
    """Regions captioned, API calls, tokens, retries, failures by reason, cache hits, words per caption;
    and, once the clip_filter stage has run, what it kept and dropped (and how well, where the truth is known)."""
    import json

    from .data.records import read_jsonl
    from .recap.stats import filter_rows, text_histogram, word_counts

    for path in (captions, metrics):
        if not path.exists():
            raise typer.BadParameter(f"{path} not found: run the recap stage first (dvc repro recap)")
    m = json.loads(metrics.read_text())
    client = m["client"]
    table = Table("", "value")
    for name, value in [("regions captioned", f"{m['captioned']} of {m['regions']} ({m['images']} images)"),
                        ("API calls", client["api_calls"]), ("retries", client["retries"]),
                        ("cache hits", client["cache_hits"]),
                        ("tokens (prompt / completion)", f"{client['prompt_tokens']} / {client['completion_tokens']}"),
                        ("failures", f"{m['failed']} {m['failures_by_reason'] or ''}".strip())]:
        table.add_row(name, str(value))
    words = word_counts(list(read_jsonl(captions)))
    if words:
        table.add_row("words per caption", f"mean {sum(words) / len(words):.1f}, min {min(words)}, max {max(words)}")
    console.print(table)
    console.print(text_histogram(words, bins=bins))
    if filter_metrics.exists():
        table = Table("clip_filter", "value")
        for name, value in filter_rows(json.loads(filter_metrics.read_text())):
            table.add_row(name, value)
        console.print(table)
    if filtered.exists():
        kept = word_counts(list(read_jsonl(filtered)))
        console.print(text_histogram(kept, bins=bins, title="words per caption, kept by clip_filter"))


if __name__ == "__main__":
    app()
