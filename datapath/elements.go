package datapath

import (
	"context"

	"sigs.k8s.io/knftables"
)

// elementWriter commits set and map element operations (adds, deletes, set flushes) in
// one transaction: all of them or none. The bulk of every sync is elements, and writing
// them through nft's text parser is what a full sync spent most of its time on.
type elementWriter interface {
	// write commits ops; decls declares the sets and maps they touch.
	write(ctx context.Context, ops []loggedOp, decls map[string]*SetDecl) error
}

// filler is an elementWriter that can write a fill its own way (see fillWith).
type filler interface {
	// fill readies ops, which only flush and fill sets and maps that no rule the hooks
	// reach refers to yet, for the returned pendingFill to commit in one transaction or
	// several. It may start readying them in the background (never touching the kernel
	// there), so that the work overlaps the caller's next step.
	fill(ops []loggedOp, decls map[string]*SetDecl) pendingFill
}

// pendingFill is a fill readied by an elementWriter, to be committed or discarded.
type pendingFill interface {
	commit(ctx context.Context) error
	discard()
}

// fillWith readies a fill of ops through w: its own way if it is a filler, else as one
// write when committed.
func fillWith(w elementWriter, ops []loggedOp, decls map[string]*SetDecl) pendingFill {
	if f, ok := w.(filler); ok {
		return f.fill(ops, decls)
	}
	return writeLater{w, ops, decls}
}

// nftElements writes elements as an nft transaction through knftables: the fallback of
// netlinkElements, and the writer over knftables' Fake.
type nftElements struct{ nft knftables.Interface }

func (w nftElements) write(ctx context.Context, ops []loggedOp, _ map[string]*SetDecl) error {
	if len(ops) == 0 {
		return nil
	}
	tx := w.nft.NewTransaction()
	replay(tx, ops)
	return w.nft.Run(ctx, tx)
}

// writeLater is a pendingFill that writes its operations through w when committed.
type writeLater struct {
	w     elementWriter
	ops   []loggedOp
	decls map[string]*SetDecl
}

func (l writeLater) commit(ctx context.Context) error { return l.w.write(ctx, l.ops, l.decls) }
func (writeLater) discard()                           {}

// opVerb is what a logged operation does to its object.
type opVerb int

const (
	opAdd opVerb = iota
	opFlush
	opDelete
)

// loggedOp is one operation of a plan: on obj, or the addition of the rendered element
// elem (obj nil), which spares a knftables object per element.
type loggedOp struct {
	verb opVerb
	obj  knftables.Object
	elem *Element
}

// object is the knftables object the operation works on.
func (op loggedOp) object() knftables.Object {
	if op.elem != nil {
		return elementObject(op.elem)
	}
	return op.obj
}

// element returns the set, key and value of an element operation; ok is false for
// other operations.
func (op loggedOp) element() (set string, key, value []string, ok bool) {
	if op.elem != nil {
		return op.elem.Set, op.elem.Key, op.elem.Value, true
	}
	if e, isElement := op.obj.(*knftables.Element); isElement {
		return opSetName(e), e.Key, e.Value, true
	}
	return "", nil, nil, false
}

// setName names the set or map an element operation works on.
func (op loggedOp) setName() string {
	if op.elem != nil {
		return op.elem.Set
	}
	return opSetName(op.obj)
}

// opLog records a plan's operations in order, so that the Proxier can send a plan made
// only of element operations through its elementWriter and any other as one nft
// transaction.
type opLog struct{ ops []loggedOp }

func (l *opLog) Add(obj knftables.Object)    { l.ops = append(l.ops, loggedOp{opAdd, obj, nil}) }
func (l *opLog) Flush(obj knftables.Object)  { l.ops = append(l.ops, loggedOp{opFlush, obj, nil}) }
func (l *opLog) Delete(obj knftables.Object) { l.ops = append(l.ops, loggedOp{opDelete, obj, nil}) }

// addRendered logs the addition of e as it is (see addElement).
func (l *opLog) addRendered(e *Element) { l.ops = append(l.ops, loggedOp{verb: opAdd, elem: e}) }

// onlyElements tells whether every operation adds or deletes an element or flushes a
// set or map.
func (l *opLog) onlyElements() bool {
	for _, op := range l.ops {
		if op.elem != nil {
			continue
		}
		switch op.obj.(type) {
		case *knftables.Element:
			if op.verb == opFlush {
				return false
			}
		case *knftables.Set, *knftables.Map:
			if op.verb != opFlush {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// replay writes ops, in order, to tx.
func replay(tx planWriter, ops []loggedOp) {
	for _, op := range ops {
		switch op.verb {
		case opAdd:
			tx.Add(op.object())
		case opFlush:
			tx.Flush(op.object())
		case opDelete:
			tx.Delete(op.object())
		}
	}
}
