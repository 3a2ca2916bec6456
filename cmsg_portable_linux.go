//go:build linux && !(amd64 || arm64 || ppc64le)

package devmem

func init() { parseControlNative = parseDevmemCmsgs }
