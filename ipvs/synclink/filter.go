package synclink

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// acceptLen is the snap length a filter returns: more than any frame, so
// frames are never cut by the filter (truncation is detected with
// MSG_TRUNC instead).
const acceptLen = 1 << 18

// asm assembles a classic BPF program whose jumps name their targets, so
// the program below can be read top to bottom without counting skips.
type asm struct {
	ins    []bpf.Instruction
	jumps  map[int][2]string // instruction index -> true, false target
	labels map[string]int
}

func newAsm() *asm {
	return &asm{jumps: map[int][2]string{}, labels: map[string]int{}}
}

func (a *asm) add(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) label(name string) { a.labels[name] = len(a.ins) }

// jump adds a conditional jump; an empty target means "next instruction".
func (a *asm) jump(cond bpf.JumpTest, val uint32, ifTrue, ifFalse string) {
	a.jumps[len(a.ins)] = [2]string{ifTrue, ifFalse}
	a.add(bpf.JumpIf{Cond: cond, Val: val})
}

// resolve fills in the jump offsets.
func (a *asm) resolve() ([]bpf.Instruction, error) {
	for i, t := range a.jumps {
		j := a.ins[i].(bpf.JumpIf)
		for k, name := range t {
			if name == "" {
				continue
			}
			target, ok := a.labels[name]
			if !ok || target <= i || target-i-1 > 255 {
				return nil, fmt.Errorf("bad jump from %d to %q", i, name)
			}
			if k == 0 {
				j.SkipTrue = uint8(target - i - 1)
			} else {
				j.SkipFalse = uint8(target - i - 1)
			}
		}
		a.ins[i] = j
	}
	return a.ins, nil
}

// tapFilter builds the kernel-side filter for a Tap: outgoing frames (when
// withPktType; the user-space VM used in tests cannot load the packet
// type), Ethernet, IPv4 or IPv6 to the group, UDP to the port range. IP
// fragments to the group pass too, so that parseFrame can count them:
// silently losing them would hide a too-small MTU.
func tapFilter(f filterSpec, withPktType bool) ([]bpf.Instruction, error) {
	a := newAsm()
	if withPktType {
		a.add(bpf.LoadExtension{Num: bpf.ExtType})
		a.jump(bpf.JumpEqual, unix.PACKET_OUTGOING, "", "drop")
	}
	a.add(bpf.LoadAbsolute{Off: 12, Size: 2})
	if f.group.Is4() {
		g := f.group.As4()
		a.jump(bpf.JumpEqual, etherTypeIPv4, "", "drop")
		a.add(bpf.LoadAbsolute{Off: etherHdrLen + 16, Size: 4})
		a.jump(bpf.JumpEqual, binary.BigEndian.Uint32(g[:]), "", "drop")
		a.add(bpf.LoadAbsolute{Off: etherHdrLen + 9, Size: 1})
		a.jump(bpf.JumpEqual, protoUDP, "", "drop")
		a.add(bpf.LoadAbsolute{Off: etherHdrLen + 6, Size: 2})
		a.jump(bpf.JumpBitsSet, 0x3fff, "accept", "")
		a.add(bpf.LoadMemShift{Off: etherHdrLen})
		a.add(bpf.LoadIndirect{Off: etherHdrLen + 2, Size: 2})
	} else {
		g := f.group.As16()
		a.jump(bpf.JumpEqual, etherTypeIPv6, "", "drop")
		for i := 0; i < 16; i += 4 {
			a.add(bpf.LoadAbsolute{Off: uint32(etherHdrLen + 24 + i), Size: 4})
			a.jump(bpf.JumpEqual, binary.BigEndian.Uint32(g[i:i+4]), "", "drop")
		}
		a.add(bpf.LoadAbsolute{Off: etherHdrLen + 6, Size: 1})
		a.jump(bpf.JumpEqual, ipv6Frag, "accept", "")
		// Other extension headers are dropped here: the kernel master
		// sends none, and parseFrame handles them for other callers.
		a.jump(bpf.JumpEqual, protoUDP, "", "drop")
		a.add(bpf.LoadAbsolute{Off: etherHdrLen + ipv6HdrLen + 2, Size: 2})
	}
	a.jump(bpf.JumpGreaterOrEqual, uint32(f.port), "", "drop")
	a.jump(bpf.JumpGreaterOrEqual, uint32(f.port)+uint32(f.count), "drop", "")
	a.label("accept")
	a.add(bpf.RetConstant{Val: acceptLen})
	a.label("drop")
	a.add(bpf.RetConstant{Val: 0})
	return a.resolve()
}
