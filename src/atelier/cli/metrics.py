"""``atelier metrics``: fit and list the feature extractors that evaluation uses."""

from __future__ import annotations

import time


def _cmd_fit_classifier(args) -> int:
    from atelier.cli.limits import check_int
    from atelier.metrics.classifier import DOMAIN_CLASSIFIERS, classifier_path, fit_domain_classifier
    from atelier.metrics.folder_classifier import fit_folder_classifier, folder_of_spec

    if args.epochs is not None:
        check_int(args.epochs, "--epochs", low=1, high=1000)
    t0 = time.perf_counter()
    if args.data in DOMAIN_CLASSIFIERS:
        if args.resolution is not None:
            raise ValueError(f"--resolution applies to folder:PATH; {DOMAIN_CLASSIFIERS[args.data]} has its own")
        fitted = fit_domain_classifier(args.data, data_dir=args.data_dir, seed=args.seed, epochs=args.epochs,
                                       progress=not args.quiet)
        name, path, cached = DOMAIN_CLASSIFIERS[args.data], classifier_path(DOMAIN_CLASSIFIERS[args.data]), False
    else:
        folder = folder_of_spec(args.data, args.data_dir)
        if folder is None:
            raise ValueError(f"--data {args.data!r}: fit-classifier takes {', '.join(DOMAIN_CLASSIFIERS)} or "
                             "folder:PATH (a folder of class sub-folders)")
        check_int(args.resolution or 32, "--resolution", low=8, high=256)
        fit = fit_folder_classifier(folder, resolution=args.resolution or 32, epochs=args.epochs, seed=args.seed,
                                    refit=args.refit, progress=not args.quiet)
        name, path, cached, fitted = fit.name, fit.path, fit.cached, fit.fitted
    took = "found in the cache, nothing trained" if cached else f"fitted in {time.perf_counter() - t0:.0f} s"
    print(f"{name}: held-out accuracy {fitted.test_accuracy:.4f}, weights sha256 {fitted.sha256}\n"
          f"  {took}; {path}")
    if not cached and name.startswith("folder-cnn:"):
        print(f"  evaluation against --data {args.data} now uses it by default")
    return 0


def _cmd_list_extractors(args) -> int:
    from atelier.metrics.classifier import DOMAIN_CLASSIFIERS, load_classifier
    from atelier.metrics.extractors import inception_weights_at_hand, list_extractors

    domain = {name: load_classifier(name) for name in DOMAIN_CLASSIFIERS.values()}
    from atelier.metrics.folder_classifier import fitted_folder_extractors

    folders = {meta["name"]: meta for meta in fitted_folder_extractors()}
    for name in list_extractors():
        if name in domain:
            f = domain[name]
            state = (f"fitted, held-out accuracy {f.test_accuracy:.4f}, sha256 {f.sha256[:12]}" if f
                     else "not fitted yet")
        elif name in folders:
            meta = folders[name]
            state = (f"fitted for {meta.get('source')} at {meta.get('resolution')} px, held-out accuracy "
                     f"{meta.get('test_accuracy', float('nan')):.4f}, sha256 {str(meta.get('sha256'))[:12]}")
        elif inception_weights_at_hand():
            state = "weights in the cache"
        else:
            state = "needs the TF InceptionV3 weights file (--inception-weights or the cache)"
        print(f"{name:22s} {state}")
    return 0


def add_metrics_parser(sub) -> None:
    m = sub.add_parser("metrics", help="feature extractors for evaluation")
    msub = m.add_subparsers(dest="metrics_command", required=True)
    f = msub.add_parser(
        "fit-classifier", help="fit and cache the domain extractor of a dataset or a labelled image folder",
        description="Fit the classifier whose features evaluation uses instead of InceptionV3's. mnist, digits, "
                    "cifar10: the dataset's own (refitted each time; cifar10's --data-dir may also be a train/ and "
                    "test/ tree of class folders). folder:PATH: a folder of class sub-folders (PATH/CLASS/*.png, or "
                    "PATH/train/CLASS and PATH/test/CLASS); cached by the folder's content and the resolution, so a "
                    "second call finds it (unless --refit), and evaluation against folder:PATH uses it by default.")
    f.add_argument("--data", default="mnist", help="mnist | digits | cifar10 | folder:PATH (default: mnist)")
    f.add_argument("--data-dir", default=None)
    f.add_argument("--resolution", type=int, default=None, help="folder:PATH only: train at this size (default: 32)")
    f.add_argument("--epochs", type=int, default=None, help="training epochs (default: per dataset)")
    f.add_argument("--refit", action="store_true", help="folder:PATH: train again even if one is cached")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_cmd_fit_classifier)
    x = msub.add_parser("extractors", help="list feature extractors and whether they are ready")
    x.set_defaults(func=_cmd_list_extractors)
