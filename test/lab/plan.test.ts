/** The lab plan and the nftables rulesets are pure: checked here without root. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isIPv4, isIPv6 } from 'node:net';
import { NAT_KINDS, lossRuleset, natStateFlushRuleset, routerRuleset, type NatKind } from '../../src/lab/nat-rules.js';
import { LAB_NODES, planLab, type LabPlan } from '../../src/lab/plan.js';

const RUN_ID = '0a1b2c';

function allText(plan: LabPlan): string {
  return [plan.rootBatch, ...LAB_NODES.map((node) => plan.scripts[node])].join('\n');
}

function tokens(text: string): string[] {
  return text.split(/[\s,;{}"]+/).map((token) => token.replace(/\/\d+$/, ''));
}

function inDocumentationRange(v4: string): boolean {
  return ['203.0.113.', '198.51.100.', '192.0.2.'].some((prefix) => v4.startsWith(prefix));
}

function plans(): LabPlan[] {
  return NAT_KINDS.flatMap((a) => NAT_KINDS.flatMap((b) => [false, true].map((ipv6) => planLab(RUN_ID, { a, b, ipv6 }))));
}

void describe('lab plan', () => {
  void it('names every namespace and interface after the run id, within the kernel’s 15 characters', () => {
    for (const plan of plans()) {
      for (const node of LAB_NODES) assert.ok(plan.namespaces[node].startsWith(`bw-${RUN_ID}-`), plan.namespaces[node]);
      const names = [...plan.rootBatch.matchAll(/link add (?:name )?(\S+)(?: netns \S+ type veth peer name (\S+))?/g)].flatMap((m) =>
        [m[1], m[2]].filter((name): name is string => name !== undefined),
      );
      assert.equal(names.length, 11);
      for (const name of names) {
        assert.ok(name.startsWith(`bw${RUN_ID}`) && name.length <= 15, name);
      }
      // Every link is created inside namespaces of the run, never in the root namespace.
      for (const line of plan.rootBatch.split('\n').filter((l) => l.startsWith('link add'))) {
        const netns = [...line.matchAll(/netns (\S+)/g)].map((m) => m[1]);
        assert.equal(netns.length, line.includes('type veth') ? 2 : 1, line);
        for (const ns of netns) assert.ok(ns?.startsWith(`bw-${RUN_ID}-`), line);
      }
    }
  });

  void it('uses only documentation addresses', () => {
    for (const plan of plans()) {
      for (const token of tokens(allText(plan))) {
        if (isIPv4(token)) assert.ok(inDocumentationRange(token), `${token} is outside the documentation ranges`);
        if (isIPv6(token)) assert.ok(token.startsWith('2001:db8:'), `${token} is outside 2001:db8::/32`);
      }
    }
  });

  void it('routes pub to a LAN only behind a firewall', () => {
    for (const plan of plans()) {
      const pub = plan.scripts.pub;
      assert.doesNotMatch(pub, /route add 192\.0\.2\./, 'pub must have no route to a private LAN');
      assert.equal(pub.includes('route add 198.51.100.128/27 via 198.51.100.2'), plan.options.a === 'firewall');
      assert.equal(pub.includes('route add 198.51.100.160/27 via 198.51.100.6'), plan.options.b === 'firewall');
    }
  });

  void it('puts hA and hA2 on router A’s LAN and numbers IPv6 only when asked', () => {
    const plan = planLab(RUN_ID, { a: 'port-restricted', b: 'firewall' });
    assert.deepEqual(plan.addresses.hosts, {
      hA: { v4: '192.0.2.2', v6: null },
      hA2: { v4: '192.0.2.3', v6: null },
      hB: { v4: '198.51.100.162', v6: null },
    });
    assert.equal(plan.addresses.routers.natA.public.v4, '198.51.100.2');
    assert.match(plan.scripts.hA, /disable_ipv6=1/);
    const v6 = planLab(RUN_ID, { a: 'symmetric', b: 'full-cone', ipv6: true });
    assert.equal(v6.addresses.hosts.hA2.v6, '2001:db8:a::3');
    assert.match(v6.scripts.hA2, /addr add 2001:db8:a::3\/64 dev \S+ nodad/);
    assert.match(v6.scripts.pub, /route add 2001:db8:a::\/64 via 2001:db8:ff:1::2/);
  });

  void it('rejects a malformed run id', () => {
    assert.throws(() => planLab('xyz; rm', { a: 'firewall', b: 'firewall' }), RangeError);
  });
});

void describe('router rulesets', () => {
  const rules = (kind: NatKind): string => routerRuleset(kind, { wan: 'wan0', lan: 'lan0', publicAddress: '198.51.100.2' });

  void it('give every kind the same dropping filter chains, for IPv4 and IPv6', () => {
    const filter = (text: string): string => text.slice(text.indexOf('table inet'), text.indexOf('}\n}\n') + 4);
    for (const kind of NAT_KINDS) {
      const text = rules(kind);
      assert.match(text, /^flush ruleset\n/);
      assert.match(text, /chain input \{\n\s+type filter hook input priority filter; policy drop;/);
      assert.match(text, /chain forward \{\n\s+type filter hook forward priority filter; policy drop;/);
      assert.equal(filter(text), filter(rules('firewall')));
    }
  });

  void it('translate as each kind requires, and never hairpin', () => {
    assert.doesNotMatch(rules('firewall'), /table ip /);
    assert.match(rules('port-restricted'), /oifname "wan0" masquerade\n/);
    assert.match(rules('symmetric'), /oifname "wan0" masquerade random\n/);
    assert.match(rules('full-cone'), /iifname "wan0" dnat ip addr \. port to udp dport map @fc/);
    assert.match(rules('address-restricted'), /iifname "wan0" ip saddr \. udp dport @adf dnat/);
    for (const kind of NAT_KINDS) {
      for (const line of rules(kind).split('\n').filter((l) => l.includes('dnat'))) {
        assert.doesNotMatch(line, /lan0/, `${kind} DNATs LAN traffic (hairpinning): ${line}`);
      }
    }
  });

  void it('reject names and addresses that could inject rules', () => {
    assert.throws(() => routerRuleset('firewall', { wan: 'wan" accept', lan: 'lan0', publicAddress: '198.51.100.2' }), RangeError);
    assert.throws(() => routerRuleset('firewall', { wan: 'a'.repeat(16), lan: 'lan0', publicAddress: '198.51.100.2' }), RangeError);
    assert.throws(() => routerRuleset('full-cone', { wan: 'wan0', lan: 'lan0', publicAddress: '198.51.100.2; flush ruleset' }), RangeError);
  });

  void it('flush learnt mappings only where they exist', () => {
    assert.match(natStateFlushRuleset('full-cone'), /flush map ip burrow_nat eim/);
    for (const kind of ['port-restricted', 'symmetric', 'firewall'] as const) assert.equal(natStateFlushRuleset(kind), '');
  });
});

void describe('loss ruleset', () => {
  void it('drops a sampled percentage of forwarded UDP and TCP, all of it at 100, none at 0', () => {
    assert.match(lossRuleset(30), /meta l4proto \{ udp, tcp \} numgen random mod 100 < 30 drop/);
    assert.match(lossRuleset(100), /meta l4proto \{ udp, tcp \} drop/);
    assert.doesNotMatch(lossRuleset(0), /chain/);
    for (const percent of [-1, 101, 2.5, Number.NaN]) assert.throws(() => lossRuleset(percent), RangeError);
  });
});
