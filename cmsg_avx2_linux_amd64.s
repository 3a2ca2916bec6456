//go:build linux

#include "textflag.h"

// func dmabufRunAVX2(src, dst unsafe.Pointer, n int) int
//
// Copies up to n back-to-back SCM_DEVMEM_DMABUF control messages of 40
// bytes at src into Frags (32 bytes each) at dst, stopping at the first
// message whose cmsg_len is not 40 or whose level and type are not
// SOL_SOCKET, SCM_DEVMEM_DMABUF; returns the number copied. Per message:
// two 8-byte compares of the header, one 32-byte load of bytes 8..40
// (level+type, frag_offset, frag_size, frag_token, dmabuf_id, flags) with
// its first 8 bytes replaced by the frag kind (FragDMABuf, gen 0), and one
// 32-byte store: that is Frag{Kind, gen, Offset, Size, Token, DMABufID,
// padding}.
TEXT ·dmabufRunAVX2(SB), NOSPLIT, $0-32
	MOVQ src+0(FP), SI
	MOVQ dst+8(FP), DI
	MOVQ n+16(FP), CX
	XORQ AX, AX
	MOVQ $40, R8           // cmsg_len
	MOVQ $0x4f00000001, R9 // SOL_SOCKET | SCM_DEVMEM_DMABUF<<32
	MOVQ $2, R10           // FragDMABuf, gen 0
	VMOVQ R10, X3

	// Four messages per round: eight compares, four load+blends, four
	// stores. A round with a message that does not qualify is redone one
	// by one, stopping there.
quad:
	LEAQ 4(AX), DX
	CMPQ DX, CX
	JGT  single
	CMPQ (SI), R8
	JNE  single
	CMPQ 8(SI), R9
	JNE  single
	CMPQ 40(SI), R8
	JNE  single
	CMPQ 48(SI), R9
	JNE  single
	CMPQ 80(SI), R8
	JNE  single
	CMPQ 88(SI), R9
	JNE  single
	CMPQ 120(SI), R8
	JNE  single
	CMPQ 128(SI), R9
	JNE  single
	VPBLENDD $0xfc, 8(SI), Y3, Y0
	VPBLENDD $0xfc, 48(SI), Y3, Y1
	VPBLENDD $0xfc, 88(SI), Y3, Y4
	VPBLENDD $0xfc, 128(SI), Y3, Y5
	VMOVDQU Y0, (DI)
	VMOVDQU Y1, 32(DI)
	VMOVDQU Y4, 64(DI)
	VMOVDQU Y5, 96(DI)
	ADDQ $160, SI
	ADDQ $128, DI
	MOVQ DX, AX
	JMP  quad

single:
	CMPQ AX, CX
	JGE  done
	CMPQ (SI), R8
	JNE  done
	CMPQ 8(SI), R9
	JNE  done
	VPBLENDD $0xfc, 8(SI), Y3, Y0
	VMOVDQU Y0, (DI)
	ADDQ $40, SI
	ADDQ $32, DI
	INCQ AX
	JMP  single

done:
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET
