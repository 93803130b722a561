/**
 * The lab's topology as data: namespace and interface names, addresses, and the commands that build it. Pure, so the
 * plan can be checked without root; `topology.ts` executes it.
 *
 * ```
 *                           pub  203.0.113.1, 203.0.113.2 on lo (servers)     2001:db8::1, ::2
 *                 198.51.100.1/30 |                    | 198.51.100.5/30
 *                 198.51.100.2/30 |                    | 198.51.100.6/30
 *                              natA                   natB        (NAT or firewall, per kind)
 *                    bridge 192.0.2.1/26               | 192.0.2.65/26
 *                       /          \                   |
 *             hA 192.0.2.2     hA2 192.0.2.3         hB 192.0.2.66
 * ```
 * Behind a `firewall` router the LAN is public instead (198.51.100.128/27 behind A, 198.51.100.160/27 behind B) and pub
 * routes to it; pub has no route to the private LANs. IPv6 (optional): router links 2001:db8:ff:1::/64 and
 * 2001:db8:ff:2::/64, LANs 2001:db8:a::/64 and 2001:db8:b::/64, routed by pub in every kind (never translated).
 *
 * All addresses are documentation ranges (RFC 5737, RFC 3849), and every name carries the run id, so a lab cannot
 * collide with the machine's own networks or with another lab.
 */

import { routerRuleset, translatesAddresses, type NatKind } from './nat-rules.js';

export type RouterNode = 'natA' | 'natB';
export type HostNode = 'hA' | 'hA2' | 'hB';
export type LabNode = 'pub' | RouterNode | HostNode;

export const LAB_NODES: readonly LabNode[] = ['pub', 'natA', 'natB', 'hA', 'hA2', 'hB'];
export const HOST_NODES: readonly HostNode[] = ['hA', 'hA2', 'hB'];
export const ROUTER_NODES: readonly RouterNode[] = ['natA', 'natB'];

export interface LabOptions {
  /** Router A's kind (hosts hA and hA2). */
  readonly a: NatKind;
  /** Router B's kind (host hB). */
  readonly b: NatKind;
  /** Give every node IPv6 addresses and routes. Default false: IPv6 is disabled in every namespace. */
  readonly ipv6?: boolean;
}

export interface NodeAddresses {
  readonly v4: string;
  /** Null when the lab has no IPv6. */
  readonly v6: string | null;
}

export interface LabAddresses {
  /** The servers' addresses in pub: `primary` for the rendezvous server, `alternate` as the second IP of RFC 5780. */
  readonly server: { readonly primary: NodeAddresses; readonly alternate: NodeAddresses };
  /** Each host's own (LAN) address. */
  readonly hosts: Readonly<Record<HostNode, NodeAddresses>>;
  /** Each router's public (WAN) address, the one its NAT maps to, and its address on the LAN. */
  readonly routers: Readonly<Record<RouterNode, { readonly public: NodeAddresses; readonly lan: NodeAddresses }>>;
}

export interface RouterPlan {
  readonly kind: NatKind;
  readonly wan: string;
  readonly lan: string;
}

export interface LabPlan {
  readonly runId: string;
  readonly options: Required<LabOptions>;
  readonly namespaces: Readonly<Record<LabNode, string>>;
  readonly routers: Readonly<Record<RouterNode, RouterPlan>>;
  readonly addresses: LabAddresses;
  /** Input for `ip -batch -` in the root namespace: creates the namespaces and the links, directly inside them. */
  readonly rootBatch: string;
  /** Per namespace, a `sh -e` script run inside it (sysctls, addresses, routes, rules). Independent of each other. */
  readonly scripts: Readonly<Record<LabNode, string>>;
}

const RUN_ID = /^[0-9a-f]{6}$/;

export function isRunId(value: string): boolean {
  return RUN_ID.test(value);
}

/** The namespace-name prefix of a run; every namespace of the run starts with it and no other does. */
export function namespacePrefix(runId: string): string {
  return `bw-${runId}-`;
}

interface LanPlan {
  readonly v4Prefix: string;
  readonly router: string;
  /** The first host (hA or hB) and the second (hA2; unused behind B). */
  readonly hosts: readonly [string, string];
  readonly v6Prefix: string;
}

/** LAN numbering per router: private when the router translates, public (and routed by pub) for a firewall. */
function lanPlan(router: RouterNode, kind: NatKind): LanPlan {
  const a = router === 'natA';
  if (translatesAddresses(kind)) {
    return a
      ? { v4Prefix: '192.0.2.0/26', router: '192.0.2.1', hosts: ['192.0.2.2', '192.0.2.3'], v6Prefix: '2001:db8:a::' }
      : { v4Prefix: '192.0.2.64/26', router: '192.0.2.65', hosts: ['192.0.2.66', '192.0.2.67'], v6Prefix: '2001:db8:b::' };
  }
  return a
    ? { v4Prefix: '198.51.100.128/27', router: '198.51.100.129', hosts: ['198.51.100.130', '198.51.100.131'], v6Prefix: '2001:db8:a::' }
    : { v4Prefix: '198.51.100.160/27', router: '198.51.100.161', hosts: ['198.51.100.162', '198.51.100.163'], v6Prefix: '2001:db8:b::' };
}

function maskOf(prefix: string): string {
  return prefix.slice(prefix.indexOf('/'));
}

function heredoc(command: string, body: string): string {
  return `${command} <<'BURROW_LAB_EOF'\n${body.trimEnd()}\nBURROW_LAB_EOF\n`;
}

/** Disables IPv6, or turns duplicate address detection off so addresses are usable at once. */
function ipv6Sysctls(ipv6: boolean, interfaces: readonly string[], forwarding: boolean): string[] {
  if (!ipv6) return ['net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'];
  return [
    'net.ipv6.conf.all.accept_dad=0',
    'net.ipv6.conf.default.accept_dad=0',
    ...interfaces.map((name) => `net.ipv6.conf.${name}.accept_dad=0`),
    ...(forwarding ? ['net.ipv6.conf.all.forwarding=1'] : []),
  ];
}

function script(sysctls: readonly string[], batch: readonly string[], ruleset?: string, extra = ''): string {
  return [
    `sysctl -qw ${sysctls.join(' ')}\n`,
    extra,
    heredoc('ip -batch -', batch.join('\n')),
    ruleset === undefined ? '' : heredoc('nft -f -', ruleset),
  ].join('');
}

export function planLab(runId: string, options: LabOptions): LabPlan {
  if (!isRunId(runId)) throw new RangeError(`invalid run id ${JSON.stringify(runId)}: want 6 lowercase hex digits`);
  const ipv6 = options.ipv6 ?? false;
  const ns = (node: LabNode): string => `${namespacePrefix(runId)}${node}`;
  const namespaces: Record<LabNode, string> = {
    pub: ns('pub'),
    natA: ns('natA'),
    natB: ns('natB'),
    hA: ns('hA'),
    hA2: ns('hA2'),
    hB: ns('hB'),
  };
  // Interface names: `bw` + run id + role, at most 11 characters (the kernel allows 15).
  const p = `bw${runId}`;
  const iface = {
    pubA: `${p}pa`,
    pubB: `${p}pb`,
    wanA: `${p}aw`,
    wanB: `${p}bw`,
    bridgeA: `${p}al`,
    portA1: `${p}a1`,
    portA2: `${p}a2`,
    lanB: `${p}bl`,
    hA: `${p}ha`,
    hA2: `${p}ha2`,
    hB: `${p}hb`,
  };
  const lanA = lanPlan('natA', options.a);
  const lanB = lanPlan('natB', options.b);
  const v6 = (address: string): string | null => (ipv6 ? address : null);
  const hostV6: Record<HostNode, string> = { hA: `${lanA.v6Prefix}2`, hA2: `${lanA.v6Prefix}3`, hB: `${lanB.v6Prefix}2` };

  const addresses: LabAddresses = {
    server: {
      primary: { v4: '203.0.113.1', v6: v6('2001:db8::1') },
      alternate: { v4: '203.0.113.2', v6: v6('2001:db8::2') },
    },
    hosts: {
      hA: { v4: lanA.hosts[0], v6: v6(hostV6.hA) },
      hA2: { v4: lanA.hosts[1], v6: v6(hostV6.hA2) },
      hB: { v4: lanB.hosts[0], v6: v6(hostV6.hB) },
    },
    routers: {
      natA: { public: { v4: '198.51.100.2', v6: v6('2001:db8:ff:1::2') }, lan: { v4: lanA.router, v6: v6(`${lanA.v6Prefix}1`) } },
      natB: { public: { v4: '198.51.100.6', v6: v6('2001:db8:ff:2::2') }, lan: { v4: lanB.router, v6: v6(`${lanB.v6Prefix}1`) } },
    },
  };

  const rootBatch = [
    ...LAB_NODES.map((node) => `netns add ${namespaces[node]}`),
    `link add ${iface.pubA} netns ${namespaces.pub} type veth peer name ${iface.wanA} netns ${namespaces.natA}`,
    `link add ${iface.pubB} netns ${namespaces.pub} type veth peer name ${iface.wanB} netns ${namespaces.natB}`,
    `link add ${iface.portA1} netns ${namespaces.natA} type veth peer name ${iface.hA} netns ${namespaces.hA}`,
    `link add ${iface.portA2} netns ${namespaces.natA} type veth peer name ${iface.hA2} netns ${namespaces.hA2}`,
    `link add ${iface.lanB} netns ${namespaces.natB} type veth peer name ${iface.hB} netns ${namespaces.hB}`,
    `link add name ${iface.bridgeA} netns ${namespaces.natA} type bridge`,
    '',
  ].join('\n');

  // Links go up before addresses and routes are added, so that routes via a gateway find their connected prefix.
  const v6Lines = (lines: readonly string[]): string[] => (ipv6 ? [...lines] : []);
  const pubBatch = [
    'link set lo up',
    `link set ${iface.pubA} up`,
    `link set ${iface.pubB} up`,
    'addr add 203.0.113.1/32 dev lo',
    'addr add 203.0.113.2/32 dev lo',
    `addr add 198.51.100.1/30 dev ${iface.pubA}`,
    `addr add 198.51.100.5/30 dev ${iface.pubB}`,
    ...(translatesAddresses(options.a) ? [] : [`route add ${lanA.v4Prefix} via 198.51.100.2`]),
    ...(translatesAddresses(options.b) ? [] : [`route add ${lanB.v4Prefix} via 198.51.100.6`]),
    ...v6Lines([
      'addr add 2001:db8::1/128 dev lo',
      'addr add 2001:db8::2/128 dev lo',
      `addr add 2001:db8:ff:1::1/64 dev ${iface.pubA} nodad`,
      `addr add 2001:db8:ff:2::1/64 dev ${iface.pubB} nodad`,
      'route add 2001:db8:a::/64 via 2001:db8:ff:1::2',
      'route add 2001:db8:b::/64 via 2001:db8:ff:2::2',
    ]),
  ];

  const routerScript = (router: RouterNode, wan: string, lan: string, ports: readonly string[], lanNet: LanPlan, link: 1 | 2): string => {
    const kind = router === 'natA' ? options.a : options.b;
    const publicV4 = addresses.routers[router].public.v4;
    const pubSide = link === 1 ? '198.51.100.1' : '198.51.100.5';
    const batch = [
      'link set lo up',
      ...ports.flatMap((port) => [`link set ${port} master ${lan}`, `link set ${port} up`]),
      `link set ${wan} up`,
      `link set ${lan} up`,
      `addr add ${publicV4}/30 dev ${wan}`,
      `addr add ${lanNet.router}${maskOf(lanNet.v4Prefix)} dev ${lan}`,
      `route add default via ${pubSide}`,
      ...v6Lines([
        `addr add 2001:db8:ff:${link}::2/64 dev ${wan} nodad`,
        `addr add ${lanNet.v6Prefix}1/64 dev ${lan} nodad`,
        `route add default via 2001:db8:ff:${link}::1`,
      ]),
    ];
    // A bridged LAN: with br_netfilter loaded, bridged frames would cross the router's forward chain (policy drop)
    // and hA could not reach hA2. Turn that off where the module exists.
    const bridgeOff =
      ports.length > 0
        ? 'if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0; fi\n'
        : '';
    return script(
      ['net.ipv4.ip_forward=1', ...ipv6Sysctls(ipv6, [wan, lan, ...ports], true)],
      batch,
      routerRuleset(kind, { wan, lan, publicAddress: publicV4 }),
      bridgeOff,
    );
  };

  const hostScript = (node: HostNode, dev: string, lanNet: LanPlan): string => {
    return script(ipv6Sysctls(ipv6, [dev], false), [
      'link set lo up',
      `link set ${dev} up`,
      `addr add ${addresses.hosts[node].v4}${maskOf(lanNet.v4Prefix)} dev ${dev}`,
      `route add default via ${lanNet.router}`,
      ...v6Lines([`addr add ${hostV6[node]}/64 dev ${dev} nodad`, `route add default via ${lanNet.v6Prefix}1`]),
    ]);
  };

  return {
    runId,
    options: { a: options.a, b: options.b, ipv6 },
    namespaces,
    routers: {
      natA: { kind: options.a, wan: iface.wanA, lan: iface.bridgeA },
      natB: { kind: options.b, wan: iface.wanB, lan: iface.lanB },
    },
    addresses,
    rootBatch,
    scripts: {
      pub: script(['net.ipv4.ip_forward=1', ...ipv6Sysctls(ipv6, [iface.pubA, iface.pubB], true)], pubBatch),
      natA: routerScript('natA', iface.wanA, iface.bridgeA, [iface.portA1, iface.portA2], lanA, 1),
      natB: routerScript('natB', iface.wanB, iface.lanB, [], lanB, 2),
      hA: hostScript('hA', iface.hA, lanA),
      hA2: hostScript('hA2', iface.hA2, lanA),
      hB: hostScript('hB', iface.hB, lanB),
    },
  };
}
