// Command pause is the sandbox ("pause") container of the local node's Pods: it holds the
// Pod's namespaces, reaps the children it inherits as PID 1, and exits on SIGTERM or SIGINT.
// kubelet needs such an image and no registry is reachable, so the devcluster builds it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for received := range signals {
		if received != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
