import { Module } from '@nestjs/common';

import { AdaptersController } from './adapters.controller.js';
import { AdaptersService } from './adapters.service.js';

@Module({ controllers: [AdaptersController], providers: [AdaptersService] })
export class AdaptersModule {}
