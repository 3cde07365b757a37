import { LabIcon } from '@jupyterlab/ui-components';

// A cloud with an arrow up: a cell leaving for the cluster. Themed through jp-icon3.
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M19.35 10.04A7.49 7.49 0 0 0 12 4C9.11 4 6.6 5.64 5.35 8.04A5.994 5.994 0 0 0 0 14c0 3.31 2.69 6 6 6h13c2.76 0 5-2.24 5-5 0-2.64-2.05-4.78-4.65-4.96zM14 13v4h-4v-4H7l5-5 5 5h-3z"/>
  </g>
</svg>`;

export const oscarIcon = new LabIcon({ name: 'oscar-jupyter:cloud', svgstr });
