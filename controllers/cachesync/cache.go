// Package cachesync gives the manager a cache that tells its informers and event handlers synced
// the moment they are. client-go's WaitForCacheSync polls every 100 ms, and a manager waits for
// its caches twice on the way to its first reconcile (once for the caches, once per source for its
// handler), so every start, restart and failover paid up to 200 ms of nothing.
package cachesync

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// New is cache.New whose result waits for sync on channels: set it as the manager's
// Options.NewCache.
func New(config *rest.Config, opts cache.Options) (cache.Cache, error) {
	c, err := cache.New(config, opts)
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Wrap returns c with a WaitForCacheSync that waits, without polling, for every informer handed
// out by GetInformer or GetInformerForKind and for every event handler added to them; informers
// started otherwise (by a first Get or List of their kind) are polled as before. IndexField
// counts as a GetInformer.
func Wrap(c cache.Cache) cache.Cache {
	return &promptCache{Cache: c, waits: map[any]toolscache.DoneChecker{}}
}

type promptCache struct {
	cache.Cache

	mu sync.Mutex
	// waits are what WaitForCacheSync waits for, keyed by informer or handler registration.
	waits map[any]toolscache.DoneChecker
}

// syncChecker is what client-go's informers and handler registrations offer besides HasSynced.
type syncChecker interface {
	HasSyncedChecker() toolscache.DoneChecker
}

func (c *promptCache) GetInformer(ctx context.Context, obj client.Object, opts ...cache.InformerGetOption) (cache.Informer, error) {
	informer, err := c.Cache.GetInformer(ctx, obj, opts...)
	if err != nil {
		return nil, err
	}
	return c.track(informer), nil
}

func (c *promptCache) GetInformerForKind(ctx context.Context, gvk schema.GroupVersionKind, opts ...cache.InformerGetOption) (cache.Informer, error) {
	informer, err := c.Cache.GetInformerForKind(ctx, gvk, opts...)
	if err != nil {
		return nil, err
	}
	return c.track(informer), nil
}

// IndexField makes the informer of obj's kind a tracked one, as GetInformer does.
func (c *promptCache) IndexField(ctx context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	if _, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
		return err
	}
	return c.Cache.IndexField(ctx, obj, field, extract)
}

// WaitForCacheSync also waits for the event handlers: a controller-runtime source asks for it
// right after adding its handler, and then polls the handler only once, finding it synced.
func (c *promptCache) WaitForCacheSync(ctx context.Context) bool {
	c.mu.Lock()
	waits := make([]toolscache.DoneChecker, 0, len(c.waits))
	for _, w := range c.waits {
		waits = append(waits, w)
	}
	c.mu.Unlock()
	for _, w := range waits {
		select {
		case <-w.Done():
		case <-ctx.Done():
			return false
		}
	}
	return c.Cache.WaitForCacheSync(ctx)
}

func (c *promptCache) track(informer cache.Informer) cache.Informer {
	checker, ok := informer.(syncChecker)
	if !ok {
		return informer
	}
	c.addWait(informer, checker)
	return &promptInformer{Informer: informer, cache: c}
}

func (c *promptCache) addWait(key any, checker syncChecker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.waits[key]; !ok {
		c.waits[key] = checker.HasSyncedChecker()
	}
}

func (c *promptCache) dropWait(key any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.waits, key)
}

// promptInformer records the handlers added to it in its cache's waits.
type promptInformer struct {
	cache.Informer
	cache *promptCache
}

func (i *promptInformer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.tracked(i.Informer.AddEventHandler(h))
}

func (i *promptInformer) AddEventHandlerWithResyncPeriod(h toolscache.ResourceEventHandler, resync time.Duration) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.tracked(i.Informer.AddEventHandlerWithResyncPeriod(h, resync))
}

func (i *promptInformer) AddEventHandlerWithOptions(h toolscache.ResourceEventHandler, opts toolscache.HandlerOptions) (toolscache.ResourceEventHandlerRegistration, error) {
	return i.tracked(i.Informer.AddEventHandlerWithOptions(h, opts))
}

// RemoveEventHandler stops waiting for the handler: once removed it may never sync.
func (i *promptInformer) RemoveEventHandler(r toolscache.ResourceEventHandlerRegistration) error {
	i.cache.dropWait(r)
	return i.Informer.RemoveEventHandler(r)
}

func (i *promptInformer) tracked(r toolscache.ResourceEventHandlerRegistration, err error) (toolscache.ResourceEventHandlerRegistration, error) {
	if err == nil {
		if checker, ok := r.(syncChecker); ok {
			i.cache.addWait(r, checker)
		}
	}
	return r, err
}
