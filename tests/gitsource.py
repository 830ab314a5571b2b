"""A GitRepository served by the real source-controller from a loopback git server: where the
advisory feed and the update check read their data from (`make flux`)."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable, Iterator

from fluxsupport.devcluster import flux
from tests import harness


@contextlib.contextmanager
def served(kubeconfig: pathlib.Path, workdir: pathlib.Path, name: str,
           fill: Callable[[pathlib.Path], None], message: str) -> Iterator[flux.Checkout]:
    """A repository ``name`` whose first commit (``message``) holds what ``fill`` writes into
    the work tree, source-controller, and a GitRepository ``name`` in the Flux namespace that
    fetches it every 3 s. Push to the checkout to change the artifact. The GitRepository is
    deleted before source-controller stops, since the controller removes its finalizer."""
    with flux.running_git_server(workdir / "git") as git_server:
        path = workdir / "checkout"
        fill(path)
        remote = git_server.create(name)
        flux.git("init", "--quiet", "--initial-branch=main", cwd=path)
        flux.git("remote", "add", "origin", remote, cwd=path)
        checkout = flux.Checkout(path, remote)
        checkout.commit(message)
        controller = flux.Controller("source-controller", kubeconfig, workdir / "source")
        controller.start()
        try:
            harness.kubectl(kubeconfig, "apply", "--server-side", "-f", "-", input_text=f"""
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: {name}, namespace: {flux.RUNTIME_NAMESPACE}}}
spec: {{url: "{git_server.url(name)}", interval: 3s, ref: {{branch: main}}}}
""")
            yield checkout
        finally:
            harness.kubectl(kubeconfig, "delete", "-n", flux.RUNTIME_NAMESPACE,
                            f"gitrepository/{name}", "--wait=true", "--timeout=120s",
                            check=False)
            controller.stop()
