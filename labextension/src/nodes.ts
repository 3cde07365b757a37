/**
 * The "Virtual nodes" section: one card per interLink node with its state and free resources.
 */
import { IVirtualNode } from './api';
import { el } from './dom';
import { formatBytes, formatCores } from './format';

export function renderNodes(nodes: IVirtualNode[]): HTMLElement {
  if (nodes.length === 0) {
    return el('p', 'oj-sidebar-empty', 'This cluster reports no interLink virtual node.');
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
    const facts = el('div', 'oj-sidebar-facts');
    facts.append(
      fact('CPU free', `${formatCores(node.cpu_free)} / ${formatCores(node.cpu_total)}`),
      fact(
        'Memory free',
        `${formatBytes(node.memory_free_bytes)} / ${formatBytes(node.memory_total_bytes)}`
      ),
      fact('GPU', `${node.gpus}`)
    );
    card.append(head, facts);
    list.appendChild(card);
  }
  return list;
}

function fact(label: string, value: string): HTMLElement {
  const box = el('span', 'oj-sidebar-fact');
  box.append(el('span', 'oj-sidebar-label', label + ' '), el('span', '', value));
  return box;
}
