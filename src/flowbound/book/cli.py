"""The ``flowbound`` command: train a variant, build the book.

Bad arguments print one line and exit with status 2. Every expected failure
(MNIST missing or damaged, an invalid profile, an unusable cache folder, no
book at --root, a chapter that fails or whose kernel dies, training that
diverges) prints one line that says what happened and what to do, and exits
with status 1; Ctrl-C says that finished work is cached and exits with 130.
``--debug`` (or ``FLOWBOUND_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from flowbound.book.profiles import PROFILES

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    from flowbound.training.zoo import VARIANTS

    parser = _Parser(
        prog="flowbound",
        description="Reproduce 'Provable defenses against spatially transformed adversarial "
        "inputs' from the command line.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also FLOWBOUND_DEBUG=1)",
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
        help="figure numbers (the paper's 1-11, and 12), or 'all'",
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


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The failures a user can cause and fix; anything else is a bug (traceback)."""
    from flowbound.book.build import BookError
    from flowbound.book.profiles import ProfileError
    from flowbound.cache import CacheError
    from flowbound.checks import SettingError
    from flowbound.data import MNISTChecksumError, MNISTNotFoundError
    from flowbound.training.fit import TrainingError

    return (
        BookError,
        CacheError,
        MNISTChecksumError,
        MNISTNotFoundError,
        ProfileError,
        SettingError,
        TrainingError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowbound`` console script."""
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("FLOWBOUND_DEBUG", "") not in ("", "0")
    try:
        return _run(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(
            "flowbound: interrupted; every network and result finished so far is cached and "
            "kept, so rerunning the same command resumes from there",
            file=sys.stderr,
        )
        return 130
    except _expected_errors() as exc:
        if debug:
            traceback.print_exc()
        message = " ".join(str(exc).split())
        print(f"flowbound: error: {message}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command in ("train", "book", "figure"):
        from flowbound.cache import check_cache_dir
        from flowbound.device import default_device
        from flowbound.training.stacking import stacks_training

        check_cache_dir()  # before anything trains or executes
        stacks_training(default_device())  # $FLOWBOUND_DEVICE, $FLOWBOUND_STACK: checked now
    if args.command == "train":
        from flowbound.book.trained import get_model
        from flowbound.data import find_mnist_dir

        find_mnist_dir()  # MNIST missing or damaged: one line, before any import of torch work
        trained = get_model(args.variant, args.profile, section=args.section)
        source = "loaded from cache" if trained.from_cache else "trained"
        print(
            f"{args.variant} ({args.profile}, hidden {trained.config['hidden']}): {source}, "
            f"test accuracy {trained.test_accuracy:.4f}, "
            f"training took {trained.train_seconds:.1f} s"
        )
        return 0
    if args.command == "figure":
        from flowbound.book.build import FigureNumberError, build_figures, figure_chapters

        if args.numbers == ["all"]:
            numbers = sorted(figure_chapters(args.root))
        else:
            try:
                numbers = [int(n) for n in args.numbers]
            except ValueError:
                print(
                    f"flowbound: error: figure numbers must be integers (1-12) or 'all', "
                    f"got {' '.join(args.numbers)}",
                    file=sys.stderr,
                )
                return 2
        try:
            build_figures(numbers, args.profile, root=args.root)
        except FigureNumberError as exc:
            print(f"flowbound: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "book":
        from flowbound.book.build import build_book

        build_book(args.profile, root=args.root, output=args.output)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
