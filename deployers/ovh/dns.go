package ovh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	ovhapi "github.com/ovh/go-ovh/ovh"
)

// DNS points names in an OVH-managed zone at preview hosts.
type DNS struct {
	api  *ovhapi.Client
	zone string
	ttl  int
}

// NewDNS manages the records of zone (e.g. "previews.example.com") with
// api (see NewClient). ttl is the records' TTL in seconds (0: 60).
func NewDNS(api *ovhapi.Client, zone string, ttl int) (*DNS, error) {
	if api == nil || zone == "" {
		return nil, errors.New("OVH DNS: an API client and a zone are needed")
	}
	if ttl <= 0 {
		ttl = 60
	}
	return &DNS{api: api, zone: strings.TrimSuffix(zone, "."), ttl: ttl}, nil
}

// subDomain returns the part of name before the zone.
func (d *DNS) subDomain(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	sub, ok := strings.CutSuffix(name, "."+d.zone)
	if !ok || sub == "" {
		return "", fmt.Errorf("%s is not in zone %s", name, d.zone)
	}
	return sub, nil
}

func (d *DNS) path(rest string) string {
	return "/domain/zone/" + url.PathEscape(d.zone) + rest
}

// Point makes name resolve to ip, alone: other A or AAAA records of name
// are removed. The zone is then refreshed.
func (d *DNS) Point(ctx context.Context, name, ip string) error {
	sub, err := d.subDomain(name)
	if err != nil {
		return fmt.Errorf("pointing %s at %s: %w", name, ip, err)
	}
	addr := net.ParseIP(ip)
	if addr == nil {
		return fmt.Errorf("pointing %s at %s: not an IP address", name, ip)
	}
	fieldType := "A"
	if addr.To4() == nil {
		fieldType = "AAAA"
	}
	if err := d.remove(ctx, sub); err != nil {
		return fmt.Errorf("pointing %s at %s: %w", name, ip, err)
	}
	req := map[string]any{"fieldType": fieldType, "subDomain": sub, "target": addr.String(), "ttl": d.ttl}
	if err := d.api.PostWithContext(ctx, d.path("/record"), req, nil); err != nil {
		return fmt.Errorf("pointing %s at %s: creating record: %w", name, ip, err)
	}
	if err := d.api.PostWithContext(ctx, d.path("/refresh"), nil, nil); err != nil {
		return fmt.Errorf("pointing %s at %s: refreshing zone: %w", name, ip, err)
	}
	return nil
}

// Remove deletes name's A and AAAA records and refreshes the zone.
// Removing a name that has none is not an error.
func (d *DNS) Remove(ctx context.Context, name string) error {
	sub, err := d.subDomain(name)
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	if err := d.remove(ctx, sub); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	if err := d.api.PostWithContext(ctx, d.path("/refresh"), nil, nil); err != nil {
		return fmt.Errorf("removing %s: refreshing zone: %w", name, err)
	}
	return nil
}

func (d *DNS) remove(ctx context.Context, sub string) error {
	for _, ft := range []string{"A", "AAAA"} {
		var ids []int64
		q := url.Values{"fieldType": {ft}, "subDomain": {sub}}
		if err := d.api.GetWithContext(ctx, d.path("/record?"+q.Encode()), &ids); err != nil {
			return fmt.Errorf("listing %s records: %w", ft, err)
		}
		for _, id := range ids {
			if err := d.api.DeleteWithContext(ctx, d.path(fmt.Sprintf("/record/%d", id)), nil); err != nil {
				return fmt.Errorf("deleting record %d: %w", id, err)
			}
		}
	}
	return nil
}
