//go:build tools

package devmem

import (
	_ "github.com/ebitengine/purego"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/mdlayher/genetlink"
	_ "github.com/mdlayher/genetlink/genltest"
	_ "github.com/mdlayher/netlink"
	_ "github.com/mdlayher/netlink/nltest"
	_ "github.com/mdlayher/socket"
	_ "golang.org/x/sys/unix"
)
