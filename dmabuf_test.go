package devmem

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestSyncFlagsValidate(t *testing.T) {
	tests := []struct {
		flags SyncFlags
		ok    bool
	}{
		{SyncStart | SyncRead, true},
		{SyncEnd | SyncRead, true},
		{SyncStart | SyncWrite, true},
		{SyncEnd | SyncWrite, true},
		{SyncStart | SyncRW, true},
		{SyncEnd | SyncRW, true},
		// What ncdevmem passes and the kernel refuses: no direction.
		{SyncStart, false},
		{SyncEnd, false},
		{SyncRead | 1<<3, false},
		{SyncRW | SyncEnd | 1<<63, false},
	}
	for _, tt := range tests {
		err := tt.flags.validate()
		if (err == nil) != tt.ok {
			t.Errorf("%v (%#x): err = %v, want ok %v", tt.flags, uint64(tt.flags), err, tt.ok)
		}
		if err != nil && !errors.Is(err, _EINVAL) {
			t.Errorf("%v: %v does not match EINVAL", tt.flags, err)
		}
	}
	// The flags are the kernel's (include/uapi/linux/dma-buf.h).
	if SyncRead != 1 || SyncWrite != 2 || SyncRW != 3 || SyncStart != 0 || SyncEnd != 4 {
		t.Fatal("SyncFlags values differ from DMA_BUF_SYNC_*")
	}
}

func TestSyncRejectsBeforeKernel(t *testing.T) {
	// fd -1 would make any ioctl fail with EBADF; validation must come first.
	b := &DMABuf{fd: -1}
	if err := b.Sync(SyncStart); err == nil || !strings.Contains(err.Error(), "direction") {
		t.Fatalf("Sync(SyncStart) = %v, want a missing-direction error", err)
	}
	if err := b.BeginCPUAccess(SyncEnd | SyncRead); err == nil {
		t.Fatal("BeginCPUAccess accepted SyncEnd")
	}
	if err := b.EndCPUAccess(SyncStart); err == nil {
		t.Fatal("EndCPUAccess accepted no direction")
	}
	if err := b.Sync(SyncStart | SyncRead); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Sync on a closed buffer = %v, want net.ErrClosed", err)
	}
}

func TestSyncFlagsString(t *testing.T) {
	for flags, want := range map[SyncFlags]string{
		SyncStart | SyncRead: "start|read",
		SyncEnd | SyncWrite:  "end|write",
		SyncStart | SyncRW:   "start|rw",
		SyncEnd:              "end",
		SyncRead | 1<<4:      "start|read|unknown(16)",
	} {
		if got := flags.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint64(flags), got, want)
		}
	}
}

func TestRoundUp(t *testing.T) {
	tests := []struct {
		n, align, want int64
		ok             bool
	}{
		{1, 4096, 4096, true},
		{4096, 4096, 4096, true},
		{4097, 4096, 8192, true},
		{4 << 20, 4096, 4 << 20, true},
		{3<<20 + 1, 2 << 20, 4 << 20, true},
		{1<<63 - 1, 4096, 0, false},
	}
	for _, tt := range tests {
		got, ok := roundUp(tt.n, tt.align)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("roundUp(%d, %d) = %d, %v; want %d, %v", tt.n, tt.align, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNewUDMABufValidation(t *testing.T) {
	for _, tt := range []struct {
		name string
		size int64
		cfg  *UDMABufConfig
	}{
		{"zero size", 0, nil},
		{"negative size", -4096, &UDMABufConfig{}},
		{"hugepage not a power of two", 4 << 20, &UDMABufConfig{HugePageSize: 3 << 20}},
		{"negative hugepage", 4 << 20, &UDMABufConfig{HugePageSize: -1}},
		{"long name", 4 << 20, &UDMABufConfig{Name: strings.Repeat("x", 32)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewUDMABuf(tt.size, tt.cfg)
			if err == nil {
				b.Close()
				t.Fatal("no error")
			}
			if !errors.Is(err, _EINVAL) {
				t.Fatalf("%v does not match EINVAL", err)
			}
		})
	}
}

func TestSetNameValidation(t *testing.T) {
	b := &DMABuf{fd: -1}
	if err := b.SetName(strings.Repeat("n", dmabufNameMax+1)); !errors.Is(err, _EINVAL) || !strings.Contains(err.Error(), "31") {
		t.Errorf("32-byte name: %v", err)
	}
	if err := b.SetName("a\x00b"); !errors.Is(err, _EINVAL) {
		t.Errorf("name with NUL: %v", err)
	}
}

func TestDMABufClosedAccess(t *testing.T) {
	b := &DMABuf{fd: -1, size: 4096, closed: true}
	if _, err := b.Map(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Map after Close: %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	if _, err := b.WriteAt(make([]byte, 1), 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteAt after Close: %v", err)
	}
	if err := b.SetName("x"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetName after Close: %v", err)
	}
	if _, err := BindTX(1, b); !errors.Is(err, net.ErrClosed) {
		t.Errorf("BindTX of a closed buffer: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
