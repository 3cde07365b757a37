/**
 * The "Virtual nodes" section: one row per interLink node with its state and free resources.
 */
import { IVirtualNode } from './api';
import { el } from './dom';
import { formatBytes, formatCores } from './format';

export function renderNodes(nodes: IVirtualNode[]): HTMLElement {
  if (nodes.length === 0) {
    return el(
      'p',
      'oj-sidebar-empty',
      'This cluster reports no interLink virtual node.'
    );
  }
  const table = el('table', 'oj-sidebar-table oj-sidebar-nodes');
  const head = table.createTHead().insertRow();
  for (const title of ['Node', 'State', 'CPU free', 'Memory free', 'GPU']) {
    head.appendChild(el('th', '', title));
  }
  const body = table.createTBody();
  for (const node of nodes) {
    const row = body.insertRow();
    row.dataset.node = node.name;
    row.appendChild(el('td', 'oj-sidebar-name', node.name)).title = node.name;
    const state = el('td');
    const ready = node.status === 'Ready';
    state.appendChild(
      el(
        'span',
        `oj-sidebar-badge ${ready ? 'oj-sidebar-node-ready' : 'oj-sidebar-node-notready'}`,
        node.status
      )
    );
    row.appendChild(state);
    row.appendChild(
      el(
        'td',
        'oj-sidebar-number',
        `${formatCores(node.cpu_free)} / ${formatCores(node.cpu_total)}`
      )
    );
    row.appendChild(
      el(
        'td',
        'oj-sidebar-number',
        `${formatBytes(node.memory_free_bytes)} / ${formatBytes(node.memory_total_bytes)}`
      )
    );
    row.appendChild(el('td', 'oj-sidebar-number', `${node.gpus}`));
  }
  return table;
}
