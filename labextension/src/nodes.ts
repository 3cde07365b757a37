/**
 * The "Virtual nodes" section: one card per interLink node with its state and free resources.
 */
import { INodes } from './api';
import { el } from './dom';
import { formatBytes, formatCores } from './format';

const SOURCE_TEXT: Record<string, string> = {
  OSCAR: "from OSCAR's /system/status",
  Kubernetes: "from the cluster's Kubernetes API",
  profile: 'named by your cluster profile (resources unknown)'
};

const SOURCE_SHORT: Record<string, string> = {
  OSCAR: 'via OSCAR',
  Kubernetes: 'via Kubernetes',
  profile: 'via profile'
};

export function renderNodes(listing: INodes): HTMLElement {
  const nodes = listing.nodes;
  if (nodes.length === 0) {
    const empty = el(
      'p',
      'oj-sidebar-empty',
      "No source lists this cluster's interLink virtual nodes."
    );
    if (listing.warning) {
      empty.title = listing.warning;
    }
    return empty;
  }
  const list = el('div', 'oj-sidebar-list');
  for (const node of nodes) {
    const card = el('div', 'oj-sidebar-card oj-sidebar-node');
    card.dataset.node = node.name;
    const head = el('div', 'oj-sidebar-card-head');
    const ready = node.status === 'Ready';
    head.append(
      el(
        'span',
        `oj-sidebar-badge ${ready ? 'oj-sidebar-node-ready' : 'oj-sidebar-node-notready'}`,
        node.status
      ),
      el('span', 'oj-sidebar-name', node.name)
    );
    if (!ready && node.reason) {
      head.title = node.reason;
    }
    const facts = el('div', 'oj-sidebar-facts');
    if (node.cpu_total > 0) {
      facts.append(
        fact(
          'CPU free',
          `${formatCores(node.cpu_free)} / ${formatCores(node.cpu_total)}`
        )
      );
    }
    if (node.memory_total_bytes > 0) {
      facts.append(
        fact(
          'Memory free',
          `${formatBytes(node.memory_free_bytes)} / ${formatBytes(node.memory_total_bytes)}`
        )
      );
    }
    if (node.cpu_total > 0 || node.gpus > 0) {
      facts.append(fact('GPU', `${node.gpus}`));
    }
    if (!facts.childElementCount) {
      facts.append(el('span', 'oj-sidebar-fact', 'free resources unknown'));
    }
    const source = el(
      'span',
      'oj-sidebar-fact oj-sidebar-node-source',
      SOURCE_SHORT[node.source] ?? node.source
    );
    source.title = SOURCE_TEXT[node.source] ?? node.source;
    facts.append(source);
    card.append(head, facts);
    if (!ready) {
      card.append(
        el(
          'div',
          'oj-sidebar-node-reason',
          node.reason ||
            (node.source === 'profile'
              ? 'Only named by the profile: its state is not known'
              : `${node.status}: the source gives no reason`)
        )
      );
    }
    list.appendChild(card);
  }
  return list;
}

function fact(label: string, value: string): HTMLElement {
  const box = el('span', 'oj-sidebar-fact');
  box.append(
    el('span', 'oj-sidebar-label', label + ' '),
    el('span', '', value)
  );
  return box;
}
