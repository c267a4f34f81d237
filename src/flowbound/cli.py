"""The ``flowbound`` command: train a variant, build the book.

Bad arguments print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .profiles import PROFILES

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    from .models import VARIANTS

    parser = _Parser(
        prog="flowbound",
        description="Reproduce 'Provable defenses against spatially transformed adversarial "
        "inputs' from the command line.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    train = sub.add_parser("train", help="train (or load from the cache) one network variant")
    train.add_argument(
        "variant",
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help=f"one of: {', '.join(sorted(VARIANTS))}",
    )
    train.add_argument(
        "--profile", choices=PROFILES, default="paper", help="sizes to use (default: paper)"
    )
    train.add_argument(
        "--section",
        type=int,
        choices=(3, 4),
        default=4,
        help="the paper section whose hidden width to use (default: 4)",
    )

    figure = sub.add_parser("figure", help="regenerate some of the paper's figures (no HTML)")
    figure.add_argument(
        "numbers",
        nargs="+",
        metavar="N",
        help="the paper's figure numbers (1-11), or 'all'",
    )
    figure.add_argument(
        "--profile", choices=PROFILES, default="paper", help="sizes to use (default: paper)"
    )
    figure.add_argument("--root", default=".", help="the book's root folder (default: .)")

    book = sub.add_parser("book", help="execute every chapter and build the HTML book")
    book.add_argument(
        "--profile", choices=PROFILES, default="paper", help="sizes to use (default: paper)"
    )
    book.add_argument("--root", default=".", help="the book's root folder (default: .)")
    book.add_argument(
        "--output",
        default=None,
        help="output folder (default: the root for paper, _build/<profile> else)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowbound`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "train":
        from .models import get_model

        trained = get_model(args.variant, args.profile, section=args.section)
        source = "loaded from cache" if trained.from_cache else "trained"
        print(
            f"{args.variant} ({args.profile}, hidden {trained.config['hidden']}): {source}, "
            f"test accuracy {trained.test_accuracy:.4f}, "
            f"training took {trained.train_seconds:.1f} s"
        )
        return 0
    if args.command == "figure":
        from .book import FIGURE_CHAPTERS, BookError, FigureNumberError, build_figures

        if args.numbers == ["all"]:
            numbers = sorted(FIGURE_CHAPTERS)
        else:
            try:
                numbers = [int(n) for n in args.numbers]
            except ValueError:
                print(
                    f"flowbound: error: figure numbers must be integers 1-11 or 'all', "
                    f"got {' '.join(args.numbers)}",
                    file=sys.stderr,
                )
                return 2
        try:
            build_figures(numbers, args.profile, root=args.root)
        except FigureNumberError as exc:
            print(f"flowbound: error: {exc}", file=sys.stderr)
            return 2
        except BookError as exc:
            print(f"flowbound: error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "book":
        from .book import BookError, build_book

        try:
            build_book(args.profile, root=args.root, output=args.output)
        except BookError as exc:
            print(f"flowbound: error: {exc}", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
