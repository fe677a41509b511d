package core

import "context"

// Slot is a one-slot semaphore: a lock that a caller waits for only as long
// as its context allows. A registration's writes and a Signer's rotations
// take one, so that a call stuck on a backend that stopped answering holds
// nobody past their own deadline.
type Slot chan struct{}

// NewSlot returns a free Slot.
func NewSlot() Slot { return make(Slot, 1) }

// Lock takes the slot, or returns ctx's error if ctx ends first.
func (s Slot) Lock(ctx context.Context) error {
	select {
	case s <- struct{}{}:
		return nil
	default:
	}
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TryLock takes the slot if it is free.
func (s Slot) TryLock() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

// Unlock frees the slot.
func (s Slot) Unlock() { <-s }
