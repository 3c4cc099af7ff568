import type { Metadata, Viewport } from 'next';
import type { ReactNode } from 'react';

import 'uplot/dist/uPlot.min.css';
import './globals.css';

import { ApiProvider } from '../components/ApiProvider';
import { Nav } from '../components/Nav';

export const metadata: Metadata = {
  title: 'Expertune console',
  description: 'Launch, watch and compare fine-tuning runs',
};

export const viewport: Viewport = { width: 'device-width', initialScale: 1 };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <a className="skip" href="#main">
          Skip to content
        </a>
        <ApiProvider>
          <Nav />
          <main id="main">{children}</main>
        </ApiProvider>
      </body>
    </html>
  );
}
