package coordinator

import "context"

// compact keeps etcd's history bounded while this coordinator leads; it
// returns when ctx ends. (Stub: the offsetstore work fills it in.)
func (c *Coordinator) compact(ctx context.Context) {
	<-ctx.Done()
}
