"""A sub-command: `modal-core count-samples DATASET [key=value ...]`."""

from modal_core import hookimpl


def count_samples(args, plugins) -> int:
    options = dict(option.split("=", 1) for option in args.options)
    dataset = plugins.datasets()[args.dataset](options, 0, "train")
    print(f"{args.dataset}: {len(dataset)} samples")
    return 0


@hookimpl
def modal_core_commands(subparsers):
    parser = subparsers.add_parser("count-samples", help="count the samples of a data set")
    parser.add_argument("dataset", help="registered data set name")
    parser.add_argument("options", nargs="*", help="data set options as key=value")
    parser.set_defaults(handler=count_samples)
